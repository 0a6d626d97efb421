#pragma once
/// \file
/// The parser of `python_pattern` (plan/pattern.hpp): Python `re` syntax into a tree of
/// `detail::pattern_node`s over character classes, with the limits it enforces and Python's own
/// error sentences; `python_pattern` compiles the tree to an automaton and matches with it.


#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/core/error.hpp"

#include <fmt/format.h>

namespace tpx::inline v0::plan {

/// The longest pattern tpx compiles (characters), its deepest group nesting, and the most
/// automaton states it may compile to (a counted repetition `x{m,n}` holds n copies of x).
inline constexpr std::size_t max_pattern_length = 4096, max_pattern_states = 20000;
inline constexpr int max_pattern_depth = 100;

namespace detail {

/// Decodes UTF-8 into code points; a byte that does not begin a well-formed sequence becomes
/// U+DC80 + byte (Python's surrogateescape), so any byte string has a meaning.
inline std::vector<char32_t> code_points(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const int extra = b < 0x80 ? 0 : (b >> 5) == 0x6 ? 1 : (b >> 4) == 0xE ? 2 : (b >> 3) == 0x1E ? 3 : -1;
    char32_t c = extra == 0 ? b : extra == 1 ? (b & 0x1F) : extra == 2 ? (b & 0x0F) : (b & 0x07);
    bool ok = extra >= 0 && i + static_cast<std::size_t>(extra) < s.size() + (extra == 0 ? 1 : 0);
    for (int k = 1; ok && k <= extra; ++k) {
      const auto t = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      ok = (t & 0xC0) == 0x80;
      c = (c << 6) | (t & 0x3F);
    }
    constexpr char32_t smallest[] = {0, 0x80, 0x800, 0x10000};
    if (ok && extra > 0) ok = c >= smallest[extra] && c <= 0x10FFFF && (c < 0xD800 || c > 0xDFFF);
    if (!ok) {
      out.push_back(0xDC80 + b);
      ++i;
      continue;
    }
    out.push_back(c);
    i += static_cast<std::size_t>(extra) + 1;
  }
  return out;
}

/// A set of code points: ranges, possibly complemented.
struct char_class {
  std::vector<std::pair<char32_t, char32_t>> ranges;
  bool negated = false;

  bool contains(char32_t c) const {
    const bool in = std::any_of(ranges.begin(), ranges.end(),
                                [c](const auto& r) { return r.first <= c && c <= r.second; });
    return in != negated;
  }
};

/// `\d`, `\w`, `\s` in their ASCII meaning; `complement` gives `\D`, `\W`, `\S` as ranges.
inline std::vector<std::pair<char32_t, char32_t>> ascii_class(char32_t letter, bool complement) {
  std::vector<std::pair<char32_t, char32_t>> r;
  switch (letter) {
    case 'd': r = {{'0', '9'}}; break;
    case 'w': r = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; break;
    default: r = {{'\t', '\r'}, {' ', ' '}}; break;  // 's': \t \n \v \f \r and space
  }
  if (!complement) return r;
  std::vector<std::pair<char32_t, char32_t>> out;
  char32_t next = 0;
  for (const auto& [lo, hi] : r) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  out.emplace_back(next, std::numeric_limits<char32_t>::max());
  return out;
}

inline bool is_word(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

enum class anchor : std::uint8_t { begin, end, end_of_text, word_boundary, not_word_boundary };

/// The parsed pattern: a tree of these, children by index.
struct pattern_node {
  enum class kind : std::uint8_t { empty, chars, anchor, concat, alternate, repeat };
  kind type = kind::empty;
  std::uint32_t value = 0;  ///< chars: the class's index; anchor: the anchor
  std::vector<std::uint32_t> children{};
  std::uint64_t min = 0, max = 0;  ///< repeat: bounds; max = unbounded for `*`, `+`, `{m,}`
  static constexpr std::uint64_t unbounded = std::numeric_limits<std::uint64_t>::max();
};


/// Recursive descent over the pattern's code points; recursion only per group, bounded by
/// `max_pattern_depth`.
struct pattern_parser {
  using node = pattern_node;
  std::vector<char32_t> s;
  std::string_view where, text;
  std::vector<char_class>& classes;
  std::vector<pattern_node>& nodes;
  bool& class_escapes;
  std::size_t pos = 0;
  std::vector<std::string> group_names{};

  template <class... Args>
  [[noreturn]] void error(std::size_t at, fmt::format_string<Args...> what, Args&&... args) {
    fail("{}: pattern \"{}\" is not a valid regular expression: {} at position {}", where, text,
         fmt::format(what, std::forward<Args>(args)...), at);
  }
  [[noreturn]] void unsupported(std::size_t at, std::string_view what) {
    fail("{}: pattern \"{}\" uses {} (at position {}), which tpx does not match: it matches "
         "patterns by an automaton, without backtracking",
         where, text, what, at);
  }

  bool at_end() const { return pos >= s.size(); }
  char32_t peek(std::size_t ahead = 0) const {
    return pos + ahead < s.size() ? s[pos + ahead] : char32_t{0xFFFFFFFF};
  }
  std::uint32_t add(node n) {
    nodes.push_back(std::move(n));
    return static_cast<std::uint32_t>(nodes.size() - 1);
  }
  std::uint32_t add_class(char_class c) {
    classes.push_back(std::move(c));
    return add({.type = node::kind::chars, .value = static_cast<std::uint32_t>(classes.size() - 1)});
  }
  std::uint32_t literal(char32_t c) { return add_class({.ranges = {{c, c}}}); }

  std::uint32_t parse() {
    const std::uint32_t root = alternation(0);
    if (!at_end()) error(pos, "unbalanced parenthesis");  // only a ')' stops the top level
    return root;
  }

  std::uint32_t alternation(int depth) {
    std::vector<std::uint32_t> alternatives{sequence(depth)};
    while (peek() == '|') {
      ++pos;
      alternatives.push_back(sequence(depth));
    }
    if (alternatives.size() == 1) return alternatives[0];
    return add({.type = node::kind::alternate, .children = std::move(alternatives)});
  }

  void skip_comments() {
    while (peek() == '(' && peek(1) == '?' && peek(2) == '#') {
      const std::size_t start = pos;
      while (!at_end() && peek() != ')') ++pos;
      if (at_end()) error(start, "missing ), unterminated comment");
      ++pos;
    }
  }

  std::uint32_t sequence(int depth) {
    std::vector<std::uint32_t> items;
    for (skip_comments(); !at_end() && peek() != '|' && peek() != ')'; skip_comments()) {
      std::size_t quantifier_at = pos;
      std::uint64_t lo = 0, hi = 0;
      if (quantifier(lo, hi)) error(quantifier_at, "nothing to repeat");
      const bool group = peek() == '(';
      std::uint32_t item = atom(depth);
      skip_comments();
      quantifier_at = pos;
      if (quantifier(lo, hi)) {
        if (!group && nodes[item].type == node::kind::anchor)  // ^*, \b+: Python's error too
          error(quantifier_at, "nothing to repeat");
        if (peek() == '?') {
          ++pos;  // lazy: the same yes/no answer as greedy
        } else if (peek() == '+') {
          unsupported(pos, "a possessive quantifier");
        }
        skip_comments();
        const std::size_t again = pos;
        std::uint64_t lo2 = 0, hi2 = 0;
        if (quantifier(lo2, hi2)) error(again, "multiple repeat");
        item = add({.type = node::kind::repeat, .children = {item}, .min = lo, .max = hi});
      }
      items.push_back(item);
    }
    if (items.empty()) return add({.type = node::kind::empty});
    if (items.size() == 1) return items[0];
    return add({.type = node::kind::concat, .children = std::move(items)});
  }

  /// Reads a quantifier at `pos` into [lo, hi] and returns true; leaves `pos` alone and
  /// returns false when there is none (a `{` that does not close a count is a literal).
  bool quantifier(std::uint64_t& lo, std::uint64_t& hi) {
    const char32_t c = peek();
    if (c == '*' || c == '+' || c == '?') {
      ++pos;
      lo = c == '+' ? 1 : 0;
      hi = c == '?' ? 1 : node::unbounded;
      return true;
    }
    if (c != '{') return false;
    std::size_t i = pos + 1;
    const auto digits = [&](std::uint64_t& value) {
      const std::size_t first = i;
      value = 0;
      for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i)
        value = std::min<std::uint64_t>(value * 10 + (s[i] - '0'), std::uint64_t{1} << 40);
      return i > first;
    };
    const bool has_lo = digits(lo);
    bool has_hi = false;
    const bool comma = i < s.size() && s[i] == ',';
    if (comma) {
      ++i;
      has_hi = digits(hi);
    }
    if (i >= s.size() || s[i] != '}' || (!comma && !has_lo)) return false;
    if (!has_lo) lo = 0;
    if (!comma) hi = lo;
    else if (!has_hi) hi = node::unbounded;
    if (lo > hi) error(pos + 1, "min repeat greater than max repeat");
    const std::uint64_t count = hi == node::unbounded ? lo : hi;
    expect(count <= max_pattern_states,
           "{}: pattern \"{}\" repeats {} times, more than the {} automaton states tpx allows",
           where, text, count, max_pattern_states);
    pos = i + 1;
    return true;
  }

  std::uint32_t atom(int depth) {
    const std::size_t start = pos;
    const char32_t c = s[pos++];
    switch (c) {
      case '(': return group(start, depth);
      case '[': return bracket_class(start);
      case '.': return add_class({.ranges = {{'\n', '\n'}}, .negated = true});
      case '^': return add({.type = node::kind::anchor, .value = static_cast<std::uint32_t>(anchor::begin)});
      case '$': return add({.type = node::kind::anchor, .value = static_cast<std::uint32_t>(anchor::end)});
      case '\\': return escape(start);
      default: return literal(c);
    }
  }

  std::uint32_t group(std::size_t start, int depth) {
    if (depth + 1 > max_pattern_depth)
      fail("{}: pattern \"{}\" nests groups more than {} deep", where, text, max_pattern_depth);
    if (peek() == '?') {
      ++pos;
      const char32_t kind = peek();
      if (kind == ':') {
        ++pos;
      } else if (kind == 'P' && peek(1) == '<') {
        pos += 2;
        const std::size_t name_at = pos;
        std::string name;
        while (!at_end() && peek() != '>') {
          const char32_t n = s[pos];
          if (!(is_word(n) && !(name.empty() && n >= '0' && n <= '9')))
            error(name_at, "bad character in group name");
          name += static_cast<char>(n);
          ++pos;
        }
        if (at_end()) error(name_at, "missing >, unterminated name");
        if (name.empty()) error(name_at, "missing group name");
        if (std::find(group_names.begin(), group_names.end(), name) != group_names.end())
          error(name_at, "redefinition of group name '{}'", name);
        group_names.push_back(name);
        ++pos;
      } else if (kind == 'P' && peek(1) == '=') {
        unsupported(start, "a backreference (?P=name)");
      } else if (kind == '=' || kind == '!' || (kind == '<' && (peek(1) == '=' || peek(1) == '!'))) {
        unsupported(start, "a lookaround group");
      } else if (kind == '>') {
        unsupported(start, "an atomic group");
      } else if (kind == '(') {
        unsupported(start, "a conditional group");
      } else if (kind == '-' || (kind < 0x80 && std::string_view("aiLmsux").find(static_cast<char>(kind)) != std::string_view::npos)) {
        unsupported(start, "inline flags");
      } else {
        error(start + 1, "unknown extension");
      }
    }
    const std::uint32_t inner = alternation(depth + 1);
    if (peek() != ')') error(start, "missing ), unterminated subpattern");
    ++pos;
    return inner;
  }

  /// Reads one escape after its backslash; `in_class` gives `\b` its class meaning (backspace).
  /// Returns a code point, or a class in `out` (then the code point returned is unused).
  char32_t escaped(std::size_t start, bool in_class, std::vector<std::pair<char32_t, char32_t>>* out) {
    if (at_end()) error(start, "bad escape (end of pattern)");
    const char32_t c = s[pos++];
    const auto hex = [&](int count) {
      char32_t v = 0;
      for (int k = 0; k < count; ++k, ++pos) {
        const char32_t h = peek();
        const int d = h >= '0' && h <= '9'   ? static_cast<int>(h - '0')
                      : h >= 'a' && h <= 'f' ? static_cast<int>(h - 'a' + 10)
                      : h >= 'A' && h <= 'F' ? static_cast<int>(h - 'A' + 10)
                                             : -1;
        if (d < 0) error(start, "incomplete escape");
        v = v * 16 + static_cast<char32_t>(d);
      }
      if (v > 0x10FFFF) error(start, "bad escape");
      return v;
    };
    const auto octal_digit = [&](std::size_t ahead) {
      return peek(ahead) >= '0' && peek(ahead) <= '7';
    };
    switch (c) {
      case 'd': case 'w': case 's': case 'D': case 'W': case 'S':
        if (out != nullptr) *out = ascii_class(c | 0x20, c < 'a');
        class_escapes = true;
        return 0;
      case 'n': return '\n';
      case 't': return '\t';
      case 'r': return '\r';
      case 'f': return '\f';
      case 'v': return '\v';
      case 'a': return '\a';
      case 'x': return hex(2);
      case 'u': return hex(4);
      case 'U': return hex(8);
      case 'N': unsupported(start, "a named character \\N{...}");
      default: break;
    }
    if (c == 'b' && in_class) return '\b';
    if (c >= '0' && c <= '9') {
      // Octal: \0 with up to two more digits; three digits from \1 to \377 (in a class, one to
      // three). Anything else is a group reference.
      if (c == '0' || (in_class && c <= '7')) {
        char32_t v = c - '0';
        for (int k = 0; k < 2 && octal_digit(0); ++k) v = v * 8 + (s[pos++] - '0');
        if (v > 0377) error(start, "octal escape value outside of range 0-0o377");
        return v;
      }
      if (c <= '7' && octal_digit(0) && octal_digit(1)) {
        const char32_t v = (c - '0') * 64 + (s[pos] - '0') * 8 + (s[pos + 1] - '0');
        pos += 2;
        if (v > 0377) error(start, "octal escape value outside of range 0-0o377");
        return v;
      }
      if (in_class) error(start, "bad escape");
      unsupported(start, "a backreference");
    }
    if (c < 0x80 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) error(start, "bad escape");
    return c;
  }

  std::uint32_t escape(std::size_t start) {
    const char32_t c = peek();
    const auto anchor_of = [&](anchor a) {
      ++pos;
      return add({.type = node::kind::anchor, .value = static_cast<std::uint32_t>(a)});
    };
    if (c == 'b' || c == 'B') class_escapes = true;
    if (c == 'b') return anchor_of(anchor::word_boundary);
    if (c == 'B') return anchor_of(anchor::not_word_boundary);
    if (c == 'A') return anchor_of(anchor::begin);
    if (c == 'Z') return anchor_of(anchor::end_of_text);
    std::vector<std::pair<char32_t, char32_t>> ranges;
    const char32_t v = escaped(start, false, &ranges);
    if (!ranges.empty()) return add_class({.ranges = std::move(ranges)});
    return literal(v);
  }

  std::uint32_t bracket_class(std::size_t start) {
    char_class cls;
    if (peek() == '^') {
      cls.negated = true;
      ++pos;
    }
    // One item: a character, or a class escape (returned in `set`).
    const auto item = [&](std::vector<std::pair<char32_t, char32_t>>& set) -> char32_t {
      const std::size_t at = pos;
      const char32_t c = s[pos++];
      if (c != '\\') return c;
      return escaped(at, true, &set);
    };
    for (bool first = true;; first = false) {
      if (at_end()) error(start, "unterminated character set");
      if (peek() == ']' && !first) break;
      const std::size_t item_at = pos;
      std::vector<std::pair<char32_t, char32_t>> set;
      const char32_t lo = item(set);
      if (peek() == '-' && peek(1) != ']' && pos + 1 < s.size()) {
        ++pos;
        std::vector<std::pair<char32_t, char32_t>> set_hi;
        const char32_t hi = item(set_hi);
        if (!set.empty() || !set_hi.empty() || lo > hi)
          error(item_at, "bad character range");
        cls.ranges.emplace_back(lo, hi);
      } else if (!set.empty()) {
        cls.ranges.insert(cls.ranges.end(), set.begin(), set.end());
      } else {
        cls.ranges.emplace_back(lo, lo);
      }
    }
    ++pos;  // ']'
    return add_class(std::move(cls));
  }
};

}  // namespace detail

}  // namespace tpx::inline v0::plan
