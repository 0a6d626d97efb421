#pragma once
/// \file
/// `text::tokenizer`: a Hugging Face `tokenizer.json` read and run in C++ — text to token ids and
/// back, as the `tokenizers` library computes them, for the BPE tokenizers of causal LMs:
///
///   byte-level BPE      ByteLevel pre-tokenizer (GPT-2's regex) or a Split regex before it
///                       (Llama-3, Qwen, SmolLM, GPT-2); the ByteLevel decoder
///   SentencePiece BPE   a Prepend / Replace normalizer or a Metaspace pre-tokenizer, byte
///                       fallback to <0xXX> tokens (Llama-2, Mistral); the Replace / ByteFallback
///                       / Fuse / Strip or Metaspace decoder
///
///   text ─ valid UTF-8 ─ split at added tokens ─┬─ normalizer ─ split at normalized added tokens
///                                               │  ─ pre-tokenizers ─ BPE per piece ─┐
///                                               └─ added token ids ──────────────────┴─ template
///   ids ─ tokens (special ones skipped on request) ─ decoder chain ─ text (lossy UTF-8)
///
/// Read: normalizers Prepend, Replace, Strip, Sequence; pre-tokenizers ByteLevel, Split, Digits,
/// Metaspace, Whitespace, WhitespaceSplit, Sequence; the BPE model (byte_fallback, unk_token,
/// fuse_unk, ignore_merges, continuing_subword_prefix, end_of_word_suffix; merges in either of
/// tokenizer.json's forms); post-processors TemplateProcessing (BOS and the like), ByteLevel,
/// Sequence; decoders ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence; added
/// tokens (special or not, lstrip / rstrip / single_word; one marked `normalized` is found in the
/// normalized text by its content as written — tokenizers normalizes that content first, which
/// is the same unless the normalizer rewrites the token's own characters). Anything else — another
/// model (WordPiece, Unigram), a Unicode normalization form, BPE dropout — is an error naming the
/// file and the key, never a silently different tokenization. Invalid UTF-8 in a text becomes
/// U+FFFD first, as Python's `decode("utf-8", "replace")` makes it (`valid_utf8`).
///
/// `encode` and `decode` are const and keep no state between calls: one tokenizer serves many
/// threads.

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/core/json.hpp"
#include "tpx/io/file.hpp"
#include "tpx/text/regex.hpp"
#include "tpx/text/utf8.hpp"

namespace tpx::inline v0::text {

using token_id = std::int64_t;

namespace detail {

/// How a split keeps the parts it finds (tokenizers' SplitDelimiterBehavior).
enum class split_behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

/// A pattern: a literal string or a regex.
struct pattern {
  std::string literal;
  std::optional<regex> re;

  template <class Fn>
  void for_each_match(std::string_view s, Fn&& fn) const {
    if (re) return re->for_each_match(s, fn);
    if (literal.empty()) return;
    for (std::size_t at = s.find(literal); at != std::string_view::npos;
         at = s.find(literal, at + literal.size()))
      fn(at, at + literal.size());
  }
};

/// A piece of text between the stages; `first` when it begins the input (Metaspace's "first").
struct piece {
  std::string text;
  bool first = false;
};

/// Splits `p` at the matches of `pat` as `how` keeps them (matches and gaps swapped by `invert`),
/// appending the non-empty parts to `out`.
inline void split(const piece& p, const pattern& pat, split_behavior how, bool invert,
                  std::vector<piece>& out) {
  struct part {
    std::size_t begin, end;
    bool match;
  };
  std::vector<part> parts;
  std::size_t last = 0;
  pat.for_each_match(p.text, [&](std::size_t b, std::size_t e) {
    if (b > last) parts.push_back({last, b, invert});
    parts.push_back({b, e, !invert});
    last = e;
  });
  if (last < p.text.size()) parts.push_back({last, p.text.size(), invert});
  std::vector<std::pair<std::size_t, std::size_t>> kept;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const part& x = parts[i];
    switch (how) {
      case split_behavior::removed:
        if (!x.match) kept.emplace_back(x.begin, x.end);
        break;
      case split_behavior::isolated:
        kept.emplace_back(x.begin, x.end);
        break;
      case split_behavior::merged_with_previous:
        if (x.match && !kept.empty() && i > 0 && !parts[i - 1].match)
          kept.back().second = x.end;
        else
          kept.emplace_back(x.begin, x.end);
        break;
      case split_behavior::merged_with_next:
        if (i > 0 && parts[i - 1].match && !x.match)
          kept.back().second = x.end;
        else
          kept.emplace_back(x.begin, x.end);
        break;
      case split_behavior::contiguous:
        if (x.match && i > 0 && parts[i - 1].match)
          kept.back().second = x.end;
        else
          kept.emplace_back(x.begin, x.end);
        break;
    }
  }
  bool first = p.first;
  for (const auto& [b, e] : kept) {
    if (e <= b) continue;
    out.push_back({p.text.substr(b, e - b), first && b == 0});
    first = false;
  }
}

inline void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  std::size_t at = 0;
  for (std::size_t k = s.find(from); k != std::string::npos; k = s.find(from, at)) {
    out.append(s, at, k - at);
    out += to;
    at = k + from.size();
  }
  if (at == 0) return;
  out.append(s, at);
  s = std::move(out);
}

/// Removes up to `n` leading (or trailing) copies of `c` from `s`.
inline void strip_copies(std::string& s, std::string_view c, std::size_t start, std::size_t stop) {
  for (std::size_t i = 0; i < start && !c.empty() && s.starts_with(c); ++i) s.erase(0, c.size());
  for (std::size_t i = 0; i < stop && !c.empty() && s.ends_with(c); ++i)
    s.erase(s.size() - c.size());
}

// --- the stages ----------------------------------------------------------------------------

struct prepend_step {
  std::string text;
};
struct replace_step {
  pattern from;
  std::string to;
};
struct strip_step {
  bool left = true, right = true;
};
using normalizer_step = std::variant<prepend_step, replace_step, strip_step>;

struct byte_level_step {
  bool add_prefix_space = false;
  std::optional<pattern> split;  ///< GPT-2's pattern under use_regex
};
struct split_step {
  pattern at;
  split_behavior how = split_behavior::isolated;
  bool invert = false;
};
struct metaspace_step {
  std::string replacement;
  enum class prepend { always, first, never } scheme = prepend::always;
  bool split = true;
};
using pre_step = std::variant<byte_level_step, split_step, metaspace_step>;

struct byte_level_decode {};
struct metaspace_decode {
  std::string replacement;
  bool strip_first = true;  ///< prepend_scheme other than "never"
};
struct replace_decode {
  std::string from, to;
};
struct byte_fallback_decode {};
struct fuse_decode {};
struct strip_decode {
  std::string content;
  std::size_t start = 0, stop = 0;
};
using decode_step = std::variant<byte_level_decode, metaspace_decode, replace_decode,
                                 byte_fallback_decode, fuse_decode, strip_decode>;

/// GPT-2's pre-tokenizer pattern (the ByteLevel pre-tokenizer's use_regex).
inline constexpr std::string_view gpt2_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

/// The byte of a "<0xXX>" token, or −1.
inline int byte_token(std::string_view t) {
  if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return -1;
  int v = 0;
  for (const char c : t.substr(3, 2)) {
    v *= 16;
    if (c >= '0' && c <= '9')
      v += c - '0';
    else if (c >= 'A' && c <= 'F')
      v += c - 'A' + 10;
    else
      return -1;
  }
  return v;
}

}  // namespace detail

/// An added token of tokenizer.json ("added_tokens").
struct added_token {
  token_id id = 0;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

class tokenizer {
 public:
  /// Reads `path` (a tokenizer.json, or a model directory holding one).
  static tokenizer from_file(const std::filesystem::path& path) {
    std::error_code ec;
    const std::filesystem::path file =
        std::filesystem::is_directory(path, ec) ? path / "tokenizer.json" : path;
    return tokenizer(io::read_json_file(file, "tokenizer"), file.string());
  }

  /// Builds the tokenizer `j` describes; `source` names it in errors.
  tokenizer(const nlohmann::json& j, std::string source) : source_(std::move(source)) {
    expect(j.is_object(), "{}: a tokenizer.json must be a JSON object", source_);
    // Ids are dense: each below the count of vocabulary entries and added tokens (a sparse id
    // would make id_to_token a table of up to 2^31 entries for a few tokens).
    const nlohmann::json* added = optional(j, "added_tokens");
    const nlohmann::json* vocab = j.contains("model") ? optional(j.at("model"), "vocab") : nullptr;
    id_limit_ = static_cast<token_id>((vocab != nullptr ? vocab->size() : 0) +
                                      (added != nullptr ? added->size() : 0));
    read_model(field(j, "model"));
    read_added(j);
    special_.assign(id_to_token_.size(), false);
    for (const added_token& a : added_)
      if (a.special) special_[static_cast<std::size_t>(a.id)] = true;
    for (std::size_t k = 0; k < added_.size(); ++k)
      added_by_byte_[static_cast<unsigned char>(added_[k].content[0])].push_back(k);
    for (std::vector<std::size_t>& list : added_by_byte_)  // longest first; equals in file order
      std::stable_sort(list.begin(), list.end(), [&](std::size_t a, std::size_t b) {
        return added_[a].content.size() > added_[b].content.size();
      });
    for (int b = 0; b < 256; ++b) {  // byte fallback's <0xXX> tokens
      const auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
      byte_ids_[static_cast<std::size_t>(b)] = it == vocab_.end() ? -1 : it->second;
    }
    if (const nlohmann::json* n = optional(j, "normalizer")) read_normalizer(*n, "normalizer");
    if (const nlohmann::json* p = optional(j, "pre_tokenizer")) read_pre(*p, "pre_tokenizer");
    if (const nlohmann::json* p = optional(j, "post_processor")) read_post(*p, "post_processor");
    if (const nlohmann::json* d = optional(j, "decoder")) read_decoder(*d, "decoder");
  }

  const std::string& source() const noexcept { return source_; }
  /// Ids 0 … vocab_size() − 1: the model's vocabulary and the added tokens.
  token_id vocab_size() const noexcept { return static_cast<token_id>(id_to_token_.size()); }
  /// The id of token `t` (an added token's content, or a vocabulary entry), if there is one.
  std::optional<token_id> token_to_id(std::string_view t) const {
    if (const auto it = added_ids_.find(std::string(t)); it != added_ids_.end()) return it->second;
    if (const auto it = vocab_.find(std::string(t)); it != vocab_.end()) return it->second;
    return std::nullopt;
  }
  /// The token of id `id`; an error for an id outside the vocabulary.
  const std::string& id_to_token(token_id id) const {
    expect(id >= 0 && id < vocab_size(), "{}: token id {} is outside the vocabulary [0, {})",
           source_, id, vocab_size());
    return id_to_token_[static_cast<std::size_t>(id)];
  }
  /// Whether `id` is a special added token (skipped by decode on request).
  bool is_special(token_id id) const {
    return id >= 0 && id < vocab_size() && special_[static_cast<std::size_t>(id)];
  }
  const std::vector<added_token>& added_tokens() const noexcept { return added_; }

  /// The ids of `text` (any bytes: invalid UTF-8 becomes U+FFFD), with the special tokens the
  /// post-processor's template adds (a BOS) when `add_special_tokens`.
  std::vector<token_id> encode(std::string_view text, bool add_special_tokens = true) const {
    const std::string valid = valid_utf8(text);
    std::vector<token_id> ids;
    std::unordered_map<std::string, std::vector<token_id>> cache;  // this call's words
    split_added(
        valid, false, true, [&](std::string_view segment, bool first, const added_token* t) {
          if (t != nullptr) return ids.push_back(t->id);
          std::string normalized(segment);
          normalize(normalized);
          split_added(normalized, true, first,
                      [&](std::string_view part, bool part_first, const added_token* n) {
                        if (n != nullptr) return ids.push_back(n->id);
                        for (const detail::piece& p : pre_tokenize({std::string(part), part_first}))
                          bpe(p.text, cache, ids);
                      });
        });
    if (!add_special_tokens || template_.empty()) return ids;
    std::vector<token_id> out;
    for (const auto& item : template_) {
      if (item)
        out.insert(out.end(), item->begin(), item->end());
      else
        out.insert(out.end(), ids.begin(), ids.end());
    }
    return out;
  }

  /// The text of `ids` (special tokens left out when `skip_special_tokens`); bytes that do not
  /// form UTF-8 become U+FFFD, as `tokenizers` decodes.
  std::string decode(std::span<const token_id> ids, bool skip_special_tokens = false) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const token_id id : ids) {
      const std::string& t = id_to_token(id);
      if (!skip_special_tokens || !special_[static_cast<std::size_t>(id)]) tokens.push_back(t);
    }
    if (!has_decoder_) {
      std::string out;
      for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    for (const detail::decode_step& s : decoders_)
      std::visit([&](const auto& step) { apply(step, tokens); }, s);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
  }

 private:
  // --- reading ---------------------------------------------------------------------------

  const nlohmann::json& field(const nlohmann::json& j, std::string_view key) const {
    const auto it = j.find(key);
    expect(it != j.end(), "{}: \"{}\" is missing", source_, key);
    return *it;
  }
  static const nlohmann::json* optional(const nlohmann::json& j, std::string_view key) {
    const auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  template <class T>
  T get(const nlohmann::json& j, std::string_view key, T fallback, std::string_view where) const {
    const nlohmann::json* v = optional(j, key);
    if (v == nullptr) return fallback;
    try {
      return v->get<T>();
    } catch (const nlohmann::json::exception&) {
      fail("{}: {}.{} has the wrong type ({})", source_, where, key, json_excerpt(*v));
    }
  }
  std::string type_of(const nlohmann::json& j, std::string_view where) const {
    expect(j.is_object() && j.contains("type") && j.at("type").is_string(),
           "{}: {} must be an object with a \"type\"", source_, where);
    return j.at("type").get<std::string>();
  }
  [[noreturn]] void unsupported(std::string_view where, std::string_view type) const {
    fail("{}: {} of type '{}' is not one tpx's tokenizer implements (see text/tokenizer.hpp)",
         source_, where, type);
  }
  detail::pattern pattern_of(const nlohmann::json& j, std::string_view where) const {
    expect(j.is_object() && (j.contains("String") || j.contains("Regex")),
           "{}: {}.pattern must be {{\"String\": …}} or {{\"Regex\": …}}", source_, where);
    detail::pattern p;
    if (j.contains("Regex"))
      p.re.emplace(get<std::string>(j, "Regex", "", where), fmt::format("{}: {}", source_, where));
    else
      p.literal = get<std::string>(j, "String", "", where);
    return p;
  }

  void read_model(const nlohmann::json& m) {
    const std::string type = type_of(m, "model");
    if (type != "BPE") unsupported("model", type);
    expect(get<double>(m, "dropout", 0.0, "model") == 0.0,
           "{}: model.dropout samples merges at random; tpx encodes deterministically (no "
           "dropout)",
           source_);
    byte_fallback_ = get<bool>(m, "byte_fallback", false, "model");
    fuse_unk_ = get<bool>(m, "fuse_unk", false, "model");
    ignore_merges_ = get<bool>(m, "ignore_merges", false, "model");
    prefix_ = get<std::string>(m, "continuing_subword_prefix", "", "model");
    suffix_ = get<std::string>(m, "end_of_word_suffix", "", "model");
    const nlohmann::json& vocab = field(m, "vocab");
    expect(vocab.is_object(), "{}: model.vocab must be an object of token: id", source_);
    for (const auto& [tok, id] : vocab.items()) {
      expect(id.is_number_integer() && id.get<std::int64_t>() >= 0 &&
                 id.get<std::int64_t>() < id_limit_,
             "{}: model.vocab gives token '{}' the id {}, not a whole number in [0, {}) (ids are "
             "dense: below the {} vocabulary entries and added tokens)",
             source_, tok, json_excerpt(id), id_limit_, id_limit_);
      vocab_.emplace(tok, id.get<token_id>());
      grow(id.get<token_id>(), tok);
    }
    if (optional(m, "unk_token") != nullptr) {
      const std::string u = get<std::string>(m, "unk_token", "", "model");
      const auto it = vocab_.find(u);
      expect(it != vocab_.end(), "{}: model.unk_token '{}' is not in the vocabulary", source_, u);
      unk_ = it->second;
    }
    const nlohmann::json& merges = field(m, "merges");
    expect(merges.is_array(), "{}: model.merges must be an array", source_);
    std::int64_t rank = 0;
    for (const nlohmann::json& mj : merges) {
      std::string a, b;
      if (mj.is_string()) {  // "a b"
        const std::string s = mj.get<std::string>();
        const std::size_t sp = s.find(' ');
        expect(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
               "{}: model.merges[{}] is '{}', not two tokens separated by one space", source_, rank,
               s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {
        expect(mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string(),
               "{}: model.merges[{}] is {}, not a pair of tokens", source_, rank, json_excerpt(mj));
        a = mj[0].get<std::string>();
        b = mj[1].get<std::string>();
      }
      const std::string joined = a + (b.starts_with(prefix_) ? b.substr(prefix_.size()) : b);
      const auto ia = vocab_.find(a), ib = vocab_.find(b), ij = vocab_.find(joined);
      expect(ia != vocab_.end() && ib != vocab_.end() && ij != vocab_.end(),
             "{}: model.merges[{}] merges '{}' and '{}' into '{}', but not all three are in the "
             "vocabulary",
             source_, rank, a, b, joined);
      merges_.emplace(pair_key(ia->second, ib->second), merge{rank, ij->second});
      ++rank;
    }
  }

  void read_added(const nlohmann::json& j) {
    const nlohmann::json* list = optional(j, "added_tokens");
    if (list == nullptr) return;
    expect(list->is_array(), "{}: \"added_tokens\" must be an array", source_);
    for (const nlohmann::json& t : *list) {
      added_token a{.id = get<token_id>(t, "id", -1, "added_tokens"),
                    .content = get<std::string>(t, "content", "", "added_tokens"),
                    .special = get<bool>(t, "special", false, "added_tokens"),
                    .lstrip = get<bool>(t, "lstrip", false, "added_tokens"),
                    .rstrip = get<bool>(t, "rstrip", false, "added_tokens"),
                    .single_word = get<bool>(t, "single_word", false, "added_tokens"),
                    .normalized = get<bool>(t, "normalized", false, "added_tokens")};
      expect(a.id >= 0 && a.id < id_limit_ && !a.content.empty(),
             "{}: added token {} needs an id in [0, {}) (ids are dense: below the vocabulary "
             "entries and added tokens) and a non-empty content",
             source_, json_excerpt(t), id_limit_);
      grow(a.id, a.content);
      added_ids_[a.content] = a.id;
      added_.push_back(std::move(a));
    }
  }

  void read_normalizer(const nlohmann::json& n, const std::string& where) {
    const std::string type = type_of(n, where);
    if (type == "Sequence") {
      for (const nlohmann::json& s : field(n, "normalizers"))
        read_normalizer(s, where + ".normalizers");
    } else if (type == "Prepend") {
      normalizers_.emplace_back(std::in_place_type<detail::prepend_step>,
                                detail::prepend_step{get<std::string>(n, "prepend", "", where)});
    } else if (type == "Replace") {
      normalizers_.emplace_back(std::in_place_type<detail::replace_step>,
                                detail::replace_step{pattern_of(field(n, "pattern"), where),
                                                     get<std::string>(n, "content", "", where)});
    } else if (type == "Strip") {
      detail::strip_step& st = std::get<detail::strip_step>(
          normalizers_.emplace_back(std::in_place_type<detail::strip_step>));
      st.left = get<bool>(n, "strip_left", true, where);
      st.right = get<bool>(n, "strip_right", true, where);
    } else {
      unsupported(where, type);
    }
  }

  void read_pre(const nlohmann::json& p, const std::string& where) {
    const std::string type = type_of(p, where);
    using behavior = detail::split_behavior;
    if (type == "Sequence") {
      for (const nlohmann::json& s : field(p, "pretokenizers"))
        read_pre(s, where + ".pretokenizers");
    } else if (type == "ByteLevel") {
      detail::byte_level_step s{get<bool>(p, "add_prefix_space", true, where), std::nullopt};
      if (get<bool>(p, "use_regex", true, where)) {
        s.split.emplace();
        s.split->re.emplace(detail::gpt2_pattern, "ByteLevel");
      }
      pre_.push_back(std::move(s));
    } else if (type == "Split") {
      const std::string b = get<std::string>(p, "behavior", "Isolated", where);
      const std::map<std::string, behavior, std::less<>> names{
          {"Removed", behavior::removed},
          {"Isolated", behavior::isolated},
          {"MergedWithPrevious", behavior::merged_with_previous},
          {"MergedWithNext", behavior::merged_with_next},
          {"Contiguous", behavior::contiguous}};
      const auto it = names.find(b);
      expect(it != names.end(), "{}: {}.behavior '{}' is not a split behavior", source_, where, b);
      pre_.push_back(detail::split_step{pattern_of(field(p, "pattern"), where), it->second,
                                        get<bool>(p, "invert", false, where)});
    } else if (type == "Digits") {
      detail::pattern d;
      d.re.emplace(R"(\p{N})", "Digits");
      pre_.push_back(detail::split_step{std::move(d),
                                        get<bool>(p, "individual_digits", false, where)
                                            ? behavior::isolated
                                            : behavior::contiguous,
                                        false});
    } else if (type == "Whitespace" || type == "WhitespaceSplit") {
      detail::pattern w;
      w.re.emplace(type == "Whitespace" ? R"(\w+|[^\w\s]+)" : R"(\S+)", type);
      pre_.push_back(detail::split_step{std::move(w), behavior::removed, true});
    } else if (type == "Metaspace") {
      const std::string scheme = get<std::string>(p, "prepend_scheme", "always", where);
      using prepend = detail::metaspace_step::prepend;
      expect(scheme == "always" || scheme == "first" || scheme == "never",
             "{}: {}.prepend_scheme '{}' is not always, first or never", source_, where, scheme);
      pre_.push_back(detail::metaspace_step{get<std::string>(p, "replacement", "\u2581", where),
                                            scheme == "always"  ? prepend::always
                                            : scheme == "first" ? prepend::first
                                                                : prepend::never,
                                            get<bool>(p, "split", true, where)});
    } else {
      unsupported(where, type);
    }
  }

  void read_post(const nlohmann::json& p, const std::string& where) {
    const std::string type = type_of(p, where);
    if (type == "Sequence") {
      for (const nlohmann::json& s : field(p, "processors")) read_post(s, where + ".processors");
    } else if (type == "ByteLevel") {
      // offsets only
    } else if (type == "TemplateProcessing") {
      const nlohmann::json& specials = field(p, "special_tokens");
      template_.clear();
      for (const nlohmann::json& item : field(p, "single")) {
        if (item.contains("Sequence")) {
          template_.emplace_back(std::nullopt);
          continue;
        }
        expect(item.contains("SpecialToken"),
               "{}: {}.single holds {}, neither a Sequence nor a "
               "SpecialToken",
               source_, where, json_excerpt(item));
        const std::string name = get<std::string>(item.at("SpecialToken"), "id", "", where);
        expect(specials.contains(name),
               "{}: {}.special_tokens has no '{}', which the template "
               "names",
               source_, where, name);
        template_.emplace_back(get<std::vector<token_id>>(specials.at(name), "ids", {}, where));
        for (const token_id id : *template_.back())
          expect(id >= 0 && id < vocab_size(),
                 "{}: {} adds token id {}, outside the vocabulary "
                 "[0, {})",
                 source_, where, id, vocab_size());
      }
    } else {
      unsupported(where, type);
    }
  }

  void read_decoder(const nlohmann::json& d, const std::string& where) {
    has_decoder_ = true;
    const std::string type = type_of(d, where);
    if (type == "Sequence") {
      for (const nlohmann::json& s : field(d, "decoders")) read_decoder(s, where + ".decoders");
    } else if (type == "ByteLevel") {
      decoders_.push_back(detail::byte_level_decode{});
    } else if (type == "Metaspace") {
      decoders_.push_back(detail::metaspace_decode{
          get<std::string>(d, "replacement", "\u2581", where),
          get<std::string>(d, "prepend_scheme", "always", where) != "never"});
    } else if (type == "Replace") {
      const detail::pattern from = pattern_of(field(d, "pattern"), where);
      expect(!from.re, "{}: {} replaces a regex; tpx's decoder replaces strings only", source_,
             where);
      decoders_.push_back(
          detail::replace_decode{from.literal, get<std::string>(d, "content", "", where)});
    } else if (type == "ByteFallback") {
      decoders_.push_back(detail::byte_fallback_decode{});
    } else if (type == "Fuse") {
      decoders_.push_back(detail::fuse_decode{});
    } else if (type == "Strip") {
      decoders_.push_back(detail::strip_decode{get<std::string>(d, "content", " ", where),
                                               get<std::size_t>(d, "start", 0, where),
                                               get<std::size_t>(d, "stop", 0, where)});
    } else {
      unsupported(where, type);
    }
  }

  void grow(token_id id, const std::string& token) {
    if (static_cast<std::size_t>(id) >= id_to_token_.size())
      id_to_token_.resize(static_cast<std::size_t>(id) + 1);
    id_to_token_[static_cast<std::size_t>(id)] = token;
  }

  // --- encoding ----------------------------------------------------------------------------

  /// Calls `fn(segment, first, token)` over `text`: the added tokens (those with
  /// `normalized` = `normalized`) found leftmost-longest as `token`, the text between as
  /// segments (token nullptr; `first` when it begins the input, given `starts`).
  template <class Fn>
  void split_added(std::string_view text, bool normalized, bool starts, Fn&& fn) const {
    std::size_t from = 0, at = 0;
    const auto word = [&](std::size_t i) {  // an ASCII word character
      const unsigned char c = static_cast<unsigned char>(text[i]);
      return std::isalnum(c) || c == '_';
    };
    while (at < text.size()) {
      // The longest added token matching here: those starting with this byte, longest first.
      const added_token* best = nullptr;
      for (const std::size_t k : added_by_byte_[static_cast<unsigned char>(text[at])]) {
        const added_token& a = added_[k];
        if (a.normalized != normalized || text.compare(at, a.content.size(), a.content) != 0)
          continue;
        const std::size_t end = at + a.content.size();
        if (a.single_word && ((at > 0 && word(at - 1)) || (end < text.size() && word(end))))
          continue;
        best = &a;
        break;
      }
      if (best == nullptr) {
        ++at;
        continue;
      }
      std::size_t begin = at, end = at + best->content.size();
      if (best->lstrip)
        while (begin > from && std::isspace(static_cast<unsigned char>(text[begin - 1]))) --begin;
      if (best->rstrip)
        while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) ++end;
      if (begin > from) fn(text.substr(from, begin - from), starts && from == 0, nullptr);
      fn(std::string_view{}, false, best);
      from = at = end;
    }
    if (from < text.size()) fn(text.substr(from), starts && from == 0, nullptr);
  }

  void normalize(std::string& s) const {
    for (const detail::normalizer_step& n : normalizers_) {
      if (const auto* p = std::get_if<detail::prepend_step>(&n)) {
        if (!s.empty()) s.insert(0, p->text);
      } else if (const auto* r = std::get_if<detail::replace_step>(&n)) {
        if (!r->from.re) {
          detail::replace_all(s, r->from.literal, r->to);
          continue;
        }
        std::string out;
        std::size_t last = 0;
        r->from.for_each_match(s, [&](std::size_t b, std::size_t e) {
          out.append(s, last, b - last);
          out += r->to;
          last = e;
        });
        out.append(s, last);
        s = std::move(out);
      } else if (const auto* st = std::get_if<detail::strip_step>(&n)) {
        const auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)); };
        if (st->right)
          while (!s.empty() && space(s.back())) s.pop_back();
        if (st->left) {
          std::size_t k = 0;
          while (k < s.size() && space(s[k])) ++k;
          s.erase(0, k);
        }
      }
    }
  }

  std::vector<detail::piece> pre_tokenize(detail::piece whole) const {
    std::vector<detail::piece> pieces{std::move(whole)}, next;
    for (const detail::pre_step& step : pre_) {
      next.clear();
      for (detail::piece& p : pieces) {
        if (const auto* b = std::get_if<detail::byte_level_step>(&step)) {
          if (b->add_prefix_space && !p.text.starts_with(' ')) p.text.insert(0, 1, ' ');
          std::vector<detail::piece> parts;
          if (b->split)
            detail::split(p, *b->split, detail::split_behavior::isolated, false, parts);
          else
            parts.push_back(std::move(p));
          const byte_map& bytes = byte_map::instance();
          for (detail::piece& q : parts) {
            std::string mapped;
            for (const char c : q.text) mapped += bytes.of(static_cast<unsigned char>(c));
            next.push_back({std::move(mapped), q.first});
          }
        } else if (const auto* s = std::get_if<detail::split_step>(&step)) {
          detail::split(p, s->at, s->how, s->invert, next);
        } else if (const auto* m = std::get_if<detail::metaspace_step>(&step)) {
          detail::replace_all(p.text, " ", m->replacement);
          using prepend = detail::metaspace_step::prepend;
          if ((m->scheme == prepend::always || (m->scheme == prepend::first && p.first)) &&
              !p.text.starts_with(m->replacement))
            p.text.insert(0, m->replacement);
          if (m->split) {
            detail::pattern r;
            r.literal = m->replacement;
            detail::split(p, r, detail::split_behavior::merged_with_next, false, next);
          } else {
            next.push_back(std::move(p));
          }
        }
      }
      pieces.swap(next);
    }
    return pieces;
  }

  struct merge {
    std::int64_t rank;
    token_id into;
  };
  static std::uint64_t pair_key(token_id a, token_id b) {
    return (static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint64_t>(b);
  }

  /// The BPE ids of one pre-tokenized word, appended to `out` (through the call's cache).
  void bpe(const std::string& word, std::unordered_map<std::string, std::vector<token_id>>& cache,
           std::vector<token_id>& out) const {
    if (word.empty()) return;
    if (const auto it = cache.find(word); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
    std::vector<token_id> symbols;
    if (const auto it = vocab_.find(word + suffix_); ignore_merges_ && it != vocab_.end()) {
      symbols.push_back(it->second);
    } else {
      bool last_unk = false;
      for_each_char(word, [&](std::size_t at, std::size_t len) {
        std::string ch = word.substr(at, len);
        if (at > 0) ch.insert(0, prefix_);
        if (at + len == word.size()) ch += suffix_;
        if (const auto v = vocab_.find(ch); v != vocab_.end()) {
          symbols.push_back(v->second);
          last_unk = false;
          return;
        }
        if (byte_fallback_) {
          std::vector<token_id> bytes;
          for (std::size_t k = at; k < at + len; ++k) {
            const token_id b = byte_ids_[static_cast<unsigned char>(word[k])];
            if (b < 0) break;
            bytes.push_back(b);
          }
          if (bytes.size() == len) {
            symbols.insert(symbols.end(), bytes.begin(), bytes.end());
            last_unk = false;
            return;
          }
        }
        if (!unk_) return;  // no unknown token: the character is dropped, as tokenizers does
        if (!(fuse_unk_ && last_unk)) symbols.push_back(*unk_);
        last_unk = true;
      });
      // Merge the adjacent pair of lowest rank (the leftmost of equals) until none merges.
      for (;;) {
        std::int64_t best = -1;
        std::size_t at = 0;
        token_id into = 0;
        for (std::size_t i = 0; i + 1 < symbols.size(); ++i) {
          const auto m = merges_.find(pair_key(symbols[i], symbols[i + 1]));
          if (m != merges_.end() && (best < 0 || m->second.rank < best)) {
            best = m->second.rank;
            at = i;
            into = m->second.into;
          }
        }
        if (best < 0) break;
        symbols[at] = into;
        symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(at) + 1);
      }
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
    cache.emplace(word, std::move(symbols));
  }

  // --- decoding ----------------------------------------------------------------------------

  static void apply(const detail::byte_level_decode&, std::vector<std::string>& tokens) {
    const byte_map& bytes = byte_map::instance();
    std::string raw;
    for (const std::string& t : tokens) {
      std::string mine;
      bool all = true;
      for_each_char(t, [&](std::size_t at, std::size_t len) {
        const int b = all ? bytes.byte_of(code_point(t, at, static_cast<int>(len))) : -1;
        if (b < 0)
          all = false;
        else
          mine += static_cast<char>(b);
      });
      raw += all ? mine : t;
    }
    tokens.assign(1, valid_utf8(raw));
  }
  static void apply(const detail::metaspace_decode& m, std::vector<std::string>& tokens) {
    for (std::size_t i = 0; i < tokens.size(); ++i)
      detail::replace_all(tokens[i], m.replacement, i == 0 && m.strip_first ? "" : " ");
  }
  static void apply(const detail::replace_decode& r, std::vector<std::string>& tokens) {
    for (std::string& t : tokens) detail::replace_all(t, r.from, r.to);
  }
  static void apply(const detail::byte_fallback_decode&, std::vector<std::string>& tokens) {
    std::vector<std::string> out;
    std::string bytes;
    std::size_t count = 0;
    const auto flush = [&] {
      if (count == 0) return;
      if (valid_utf8(bytes) == bytes) {
        out.push_back(bytes);
      } else {
        for (std::size_t k = 0; k < count; ++k) {
          std::string r;
          append_utf8(r, replacement_char);
          out.push_back(r);
        }
      }
      bytes.clear();
      count = 0;
    };
    for (std::string& t : tokens) {
      if (const int b = detail::byte_token(t); b >= 0) {
        bytes += static_cast<char>(b);
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
  static void apply(const detail::fuse_decode&, std::vector<std::string>& tokens) {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
  static void apply(const detail::strip_decode& s, std::vector<std::string>& tokens) {
    for (std::string& t : tokens) detail::strip_copies(t, s.content, s.start, s.stop);
  }

  std::string source_;
  std::unordered_map<std::string, token_id> vocab_;
  std::unordered_map<std::uint64_t, merge> merges_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> special_;
  std::vector<added_token> added_;
  /// added_'s indices by their content's first byte, longest first (the matcher's candidates).
  std::array<std::vector<std::size_t>, 256> added_by_byte_;
  std::array<token_id, 256> byte_ids_{};  ///< each byte's <0xXX> token, or −1
  std::unordered_map<std::string, token_id> added_ids_;
  std::optional<token_id> unk_;
  token_id id_limit_ = 0;  ///< ids are below it: vocabulary entries + added tokens
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false, has_decoder_ = false;
  std::string prefix_, suffix_;
  std::vector<detail::normalizer_step> normalizers_;
  std::vector<detail::pre_step> pre_;
  std::vector<std::optional<std::vector<token_id>>> template_;  // nullopt: the sequence
  std::vector<detail::decode_step> decoders_;
};

}  // namespace tpx::inline v0::text
