#pragma once
/// \file
/// `text::regex`: a pattern of a tokenizer.json (its pre-tokenizers' splits, a normalizer's
/// replacements), compiled by PCRE2 with Unicode properties (`\p{L}`, `\s` as Unicode spaces)
/// and, where the platform has it, its JIT. Not `std::regex`, which recurses once per character
/// and knows no Unicode classes. Needs libpcre2-8 (Debian `libpcre2-dev`): the `tpx-text`
/// dependency links it.
///
/// A pattern PCRE2 cannot compile is an error naming the pattern, the offset and PCRE2's reason.
/// Subjects must be valid UTF-8 (the tokenizer makes them so first).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "tpx/core/error.hpp"

namespace tpx::inline v0::text {

class regex {
 public:
  /// Compiles `pattern` (UTF-8); `what` names it in errors.
  regex(std::string_view pattern, std::string_view what) : pattern_(pattern) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                  PCRE2_UTF | PCRE2_UCP, &code, &offset, nullptr);
    if (c == nullptr)
      fail("{}: the pattern '{}' does not compile (PCRE2, at offset {}: {})", what, pattern, offset,
           message(code));
    code_.reset(c);
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);  // without a JIT, the interpreter runs
  }
  regex(const regex& o) : regex(o.pattern_, "regex") {}
  regex& operator=(const regex& o) {
    if (this != &o) *this = regex(o);
    return *this;
  }
  regex(regex&&) noexcept = default;
  regex& operator=(regex&&) noexcept = default;

  const std::string& pattern() const noexcept { return pattern_; }

  /// Calls `fn(begin, end)` for each non-empty match of the pattern in `s`, left to right, each
  /// search starting where the last match ended. Safe on several threads at once.
  template <class Fn>
  void for_each_match(std::string_view s, Fn&& fn) const {
    const std::unique_ptr<pcre2_match_data, free_data> data(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr));
    expect(data != nullptr, "the pattern '{}': PCRE2 could not allocate its match data", pattern_);
    PCRE2_SIZE start = 0;
    // PCRE2 checks the whole subject's UTF-8 on every call unless told not to: the first call
    // checks it, the later ones (the same subject) skip it — else matching is quadratic.
    std::uint32_t options = 0;
    const auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    while (start <= s.size()) {
      const int rc =
          pcre2_match(code_.get(), subject, s.size(), start, options, data.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) return;
      expect(rc >= 0, "the pattern '{}' failed on a {}-byte text (PCRE2: {})", pattern_, s.size(),
             message(rc));
      options = PCRE2_NO_UTF_CHECK;
      const PCRE2_SIZE* o = pcre2_get_ovector_pointer(data.get());
      if (o[1] > o[0]) {
        fn(static_cast<std::size_t>(o[0]), static_cast<std::size_t>(o[1]));
        start = o[1];
      } else {  // an empty match: go on from the next character
        start = o[0] + 1;
        while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) ++start;
      }
    }
  }

 private:
  static std::string message(int code) {
    PCRE2_UCHAR buffer[256];
    const int n = pcre2_get_error_message(code, buffer, sizeof buffer);
    return n < 0 ? "unknown error" : std::string(reinterpret_cast<const char*>(buffer));
  }
  struct free_code {
    void operator()(pcre2_code* c) const noexcept { pcre2_code_free(c); }
  };
  struct free_data {
    void operator()(pcre2_match_data* d) const noexcept { pcre2_match_data_free(d); }
  };

  std::string pattern_;
  std::unique_ptr<pcre2_code, free_code> code_;
};

}  // namespace tpx::inline v0::text
