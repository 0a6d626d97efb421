#pragma once
/// \file
/// The one JSON parser of tpx, for every file it reads (config.json, plans, DeepSpeed configs,
/// safetensors headers and indexes), and the excerpt its messages quote.
///
/// Limits, each an error sentence naming the file: a value nested deeper than `max_json_depth`
/// arrays and objects (a config is a few levels deep; the bound keeps every later walk of the
/// value, and nlohmann's own dump, off the end of the stack); invalid JSON, with nlohmann's
/// reason (numbers out of range such as `1e400`, ill-formed UTF-8) but not its exception type;
/// with `duplicate_keys::reject`, an object that names a key twice (a plain parse keeps the last).

#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"

namespace tpx::inline v0 {

/// The deepest nesting of arrays and objects tpx reads.
inline constexpr int max_json_depth = 64;

enum class duplicate_keys { keep_last, reject };

/// Parses `text`, read from `what` (a file, for messages).
inline nlohmann::json parse_json(std::string_view text, std::string_view what,
                                 duplicate_keys duplicates = duplicate_keys::keep_last) {
  std::vector<std::set<std::string>> keys;  // one set per open object, when rejecting duplicates
  const auto check = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using ev = nlohmann::json::parse_event_t;
    if (event == ev::object_start || event == ev::array_start) {
      expect(depth < max_json_depth,
             "{}: the JSON nests arrays and objects deeper than {} levels, tpx's limit", what,
             max_json_depth);
      if (event == ev::object_start && duplicates == duplicate_keys::reject) keys.emplace_back();
    }
    if (duplicates == duplicate_keys::reject) {
      if (event == ev::object_end) keys.pop_back();
      if (event == ev::key && !keys.back().insert(parsed.get<std::string>()).second)
        fail("{}: the JSON names '{}' twice in one object", what, parsed.get<std::string>());
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), check);
  } catch (const nlohmann::json::exception& e) {
    std::string why = e.what();
    if (const std::size_t at = why.find("] "); at != std::string::npos) why = why.substr(at + 2);
    // nlohmann quotes the bytes it read last, which may not be UTF-8: the position says where.
    if (const std::size_t at = why.find("; last read: "); at != std::string::npos)
      why = why.substr(0, at);
    fail("{} is not valid JSON ({})", what, why);
  }
}

/// `v` as messages quote it: its JSON text cut to `limit` characters (then "…"), ill-formed
/// UTF-8 replaced, so quoting never throws and never floods a message.
inline std::string json_excerpt(const nlohmann::json& v, std::size_t limit = 60) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > limit) {
    std::size_t cut = limit;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // whole chars
    s = s.substr(0, cut) + "…";
  }
  return s;
}

}  // namespace tpx::inline v0
