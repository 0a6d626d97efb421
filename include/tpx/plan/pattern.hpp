#pragma once
/// \file
/// `python_pattern`: a regular expression in Python's `re` syntax, matched against a tensor name
/// the way DeepSpeed matches its layer specs (`re.match`: a match that begins at the name's first
/// character) — by an automaton, in time proportional to the name's length times the pattern's
/// size, without backtracking and without recursion per character. No pattern or name can make
/// it hang or overflow the stack.
///
/// Supported, with Python's meaning: literals and escapes (`\.`, `\n`, `\t`, `\xhh`, `\uhhhh`,
/// `\Uhhhhhhhh`, octal `\0`, `\101`), `.` (any character but a newline), classes `[a-z_]`,
/// `[^...]`, `\d \w \s \D \W \S` and `\b \B` (over ASCII names; Python reads them by Unicode's
/// tables, so matching one against a name with a non-ASCII character is refused), groups
/// `(...)`, `(?:...)`, `(?P<name>...)`, comments `(?#...)`, alternation `a|b`, quantifiers
/// `* + ? {m} {m,} {,n} {m,n}` greedy or lazy (`*?`; for a yes/no match they are the same), and
/// the anchors `^ $ \A \Z \b \B`. A name is matched by code point (UTF-8 decoded), as Python
/// matches a str.
///
/// Refused with a sentence, because no automaton can match them or DeepSpeed's patterns do not
/// use them: backreferences (`\1`, `(?P=name)`), lookaround (`(?=`, `(?!`, `(?<=`, `(?<!`),
/// atomic groups and possessive quantifiers (`(?>`, `*+`), conditionals, inline flags (`(?i)`)
/// and `\N{...}`. Python's own syntax errors ("nothing to repeat", "multiple repeat", "bad
/// character range", …) are errors here too, with Python's words and position.


#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/plan/pattern_syntax.hpp"

namespace tpx::inline v0::plan {

namespace detail {

/// One automaton state: consume a character of a class, test an anchor, branch, or accept.
struct nfa_state {
  enum class kind : std::uint8_t { chars, anchor, split, match };
  kind type = kind::match;
  std::uint32_t value = 0;
  std::uint32_t out = 0, out1 = 0;
};

}  // namespace detail

/// A compiled pattern (see the file comment for the syntax).
class python_pattern {
 public:
  /// Compiles `text`; an error names `where`, the pattern, what is wrong and its position.
  python_pattern(std::string_view text, std::string_view where) : text_(text) {
    expect(text.size() <= max_pattern_length,
           "{}: a pattern of {} characters is longer than the {} tpx accepts", where, text.size(),
           max_pattern_length);
    detail::pattern_parser p{detail::code_points(text), where, text, classes_, nodes_,
                             class_escapes_};
    const std::uint32_t root = p.parse();
    const std::uint64_t size = states_of(root);
    expect(size <= max_pattern_states,
           "{}: pattern \"{}\" compiles to more than the {} automaton states tpx allows (a "
           "counted repetition x{{m,n}} holds n copies of x); write it with smaller counts",
           where, text, max_pattern_states);
    states_.push_back({.type = detail::nfa_state::kind::match});
    start_ = emit(root, 0);
    nodes_.clear();
    nodes_.shrink_to_fit();
  }

  /// True when the pattern matches a prefix of `name` (Python's `re.match(pattern, name)`).
  /// Python gives `\d`, `\w`, `\s` and `\b` their Unicode meaning; tpx knows their ASCII one,
  /// so a pattern that uses them refuses a name with a non-ASCII character rather than guess.
  bool match(std::string_view name) const {
    const std::vector<char32_t> s = detail::code_points(name);
    if (class_escapes_)
      for (std::size_t i = 0; i < s.size(); ++i)
        expect(s[i] < 0x80,
               "pattern \"{}\" uses \\d, \\w, \\s or \\b, which Python reads by Unicode's "
               "tables and tpx by ASCII's, and tensor name \"{}\" holds the non-ASCII character "
               "U+{:04X} at position {}; write the class out, as [0-9] for \\d",
               text_, name, static_cast<std::uint32_t>(s[i]), i);
    std::vector<std::uint32_t> current, next, stack;
    std::vector<std::size_t> seen(states_.size(), 0);  // the step that last added a state, + 1
    bool matched = false;
    // Adds `from` and every state reachable from it without consuming a character at `pos`.
    const auto add = [&](std::vector<std::uint32_t>& list, std::uint32_t from, std::size_t pos) {
      stack.push_back(from);
      while (!stack.empty()) {
        const std::uint32_t i = stack.back();
        stack.pop_back();
        if (seen[i] == pos + 1) continue;
        seen[i] = pos + 1;
        const detail::nfa_state& st = states_[i];
        switch (st.type) {
          case detail::nfa_state::kind::match: matched = true; break;
          case detail::nfa_state::kind::chars: list.push_back(i); break;
          case detail::nfa_state::kind::split:
            stack.push_back(st.out1);
            stack.push_back(st.out);
            break;
          case detail::nfa_state::kind::anchor:
            if (holds(static_cast<detail::anchor>(st.value), s, pos)) stack.push_back(st.out);
            break;
        }
      }
    };
    add(current, start_, 0);
    for (std::size_t pos = 0; pos < s.size() && !matched && !current.empty(); ++pos) {
      next.clear();
      for (const std::uint32_t i : current)
        if (classes_[states_[i].value].contains(s[pos])) add(next, states_[i].out, pos + 1);
      current.swap(next);
    }
    return matched;
  }

  /// The pattern as written.
  const std::string& text() const { return text_; }
  /// How many automaton states it compiled to.
  std::size_t states() const { return states_.size(); }

 private:
  using node = detail::pattern_node;

  static bool holds(detail::anchor a, const std::vector<char32_t>& s, std::size_t pos) {
    const std::size_t n = s.size();
    switch (a) {
      case detail::anchor::begin: return pos == 0;
      case detail::anchor::end: return pos == n || (pos + 1 == n && s[pos] == '\n');
      case detail::anchor::end_of_text: return pos == n;
      case detail::anchor::word_boundary:
      case detail::anchor::not_word_boundary: {
        // Python's sre: neither \b nor \B holds in an empty string.
        if (n == 0) return false;
        const bool before = pos > 0 && detail::is_word(s[pos - 1]);
        const bool after = pos < n && detail::is_word(s[pos]);
        return (before != after) == (a == detail::anchor::word_boundary);
      }
    }
    return false;
  }


  /// How many states `emit` makes for node `i`, saturating above `max_pattern_states`.
  std::uint64_t states_of(std::uint32_t i) const {
    static constexpr std::uint64_t cap = max_pattern_states + 1;
    const node& n = nodes_[i];
    const auto sat = [](std::uint64_t v) { return std::min(v, cap); };
    switch (n.type) {
      case node::kind::empty: return 0;
      case node::kind::chars:
      case node::kind::anchor: return 1;
      case node::kind::concat:
      case node::kind::alternate: {
        std::uint64_t total = n.type == node::kind::alternate ? n.children.size() - 1 : 0;
        for (const std::uint32_t c : n.children) total = sat(total + states_of(c));
        return total;
      }
      case node::kind::repeat: {
        const std::uint64_t body = states_of(n.children[0]);
        const std::uint64_t copies = n.max == node::unbounded ? n.min + 1 : n.max;
        const std::uint64_t splits = n.max == node::unbounded ? 1 : n.max - n.min;
        return sat(sat(body * std::min(copies, cap)) + splits);
      }
    }
    return cap;
  }

  std::uint32_t state(detail::nfa_state st) {
    states_.push_back(st);
    return static_cast<std::uint32_t>(states_.size() - 1);
  }

  /// Emits node `i` so that on success it continues at state `next`; returns its first state.
  std::uint32_t emit(std::uint32_t i, std::uint32_t next) {
    const node& n = nodes_[i];
    using k = detail::nfa_state::kind;
    switch (n.type) {
      case node::kind::empty: return next;
      case node::kind::chars: return state({.type = k::chars, .value = n.value, .out = next});
      case node::kind::anchor: return state({.type = k::anchor, .value = n.value, .out = next});
      case node::kind::concat:
        for (auto c = n.children.rbegin(); c != n.children.rend(); ++c) next = emit(*c, next);
        return next;
      case node::kind::alternate: {
        std::uint32_t first = emit(n.children.back(), next);
        for (auto c = n.children.rbegin() + 1; c != n.children.rend(); ++c)
          first = state({.type = k::split, .out = emit(*c, next), .out1 = first});
        return first;
      }
      case node::kind::repeat: {
        const std::uint32_t body = n.children[0];
        std::uint32_t tail = next;
        if (n.max == node::unbounded) {
          tail = state({.type = k::split, .out1 = next});  // loop: body again, or on
          const std::uint32_t loop = tail;
          const std::uint32_t start = emit(body, loop);
          states_[loop].out = start;
        } else {
          for (std::uint64_t c = n.min; c < n.max; ++c)  // optional copies: x (x (x)?)?
            tail = state({.type = k::split, .out = emit(body, tail), .out1 = next});
        }
        for (std::uint64_t c = 0; c < n.min; ++c) tail = emit(body, tail);
        return tail;
      }
    }
    return next;
  }

  std::string text_;
  std::vector<detail::char_class> classes_;
  std::vector<node> nodes_;
  bool class_escapes_ = false;  ///< the pattern uses \\d \\w \\s (or complements), \\b or \\B
  std::vector<detail::nfa_state> states_;
  std::uint32_t start_ = 0;
};

}  // namespace tpx::inline v0::plan
