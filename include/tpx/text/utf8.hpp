#pragma once
/// \file
/// UTF-8 as a tokenizer needs it: the code points of a string, a code point's bytes, text made
/// valid the way Python's `bytes.decode("utf-8", "replace")` and Rust's `from_utf8_lossy` make it
/// (each maximal ill-formed subpart — a lead byte and the continuation bytes that could still
/// have completed it — becomes one U+FFFD), and GPT-2's byte ↔ character map of the byte-level
/// pre-tokenizer and decoder.
///
///   byte b ∈ [33, 126] ∪ [161, 172] ∪ [174, 255]   → the character U+00b itself
///   the other 68 bytes, in order                   → U+0100, U+0101, … (0 → U+0100, ' ' → U+0120)

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace tpx::inline v0::text {

/// U+FFFD, the replacement character.
inline constexpr char32_t replacement_char = 0xFFFD;

/// Appends code point `c`'s UTF-8 bytes to `out`.
inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

namespace detail {
/// The length of the well-formed sequence at s[i] (1–4), or 0 with `bad` set to the length of
/// its maximal ill-formed subpart (≥ 1) — Unicode's table 3-7 of well-formed byte sequences.
inline int utf8_sequence(std::string_view s, std::size_t i, int& bad) {
  const auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b = at(i);
  bad = 1;
  if (b < 0x80) return 1;
  int n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    n = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    n = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;  // a continuation byte, C0, C1 or F5–FF: ill-formed alone
  }
  for (int k = 1; k < n; ++k) {
    if (i + static_cast<std::size_t>(k) >= s.size()) return bad = k, 0;
    const unsigned char c = at(i + static_cast<std::size_t>(k));
    if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return bad = k, 0;
  }
  return n;
}
}  // namespace detail

/// The code point of the well-formed sequence of `n` bytes at s[i].
inline char32_t code_point(std::string_view s, std::size_t i, int n) {
  const auto at = [&](std::size_t k) {
    return static_cast<char32_t>(static_cast<unsigned char>(s[k]));
  };
  if (n == 1) return at(i);
  char32_t c = at(i) & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (int k = 1; k < n; ++k) c = (c << 6) | (at(i + static_cast<std::size_t>(k)) & 0x3F);
  return c;
}

/// `s` with each maximal ill-formed subpart replaced by U+FFFD (`s` itself when well-formed).
inline std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    int bad = 0;
    const int n = detail::utf8_sequence(s, i, bad);
    if (n > 0) {
      out.append(s.substr(i, static_cast<std::size_t>(n)));
      i += static_cast<std::size_t>(n);
    } else {
      append_utf8(out, replacement_char);
      i += static_cast<std::size_t>(bad);
    }
  }
  return out;
}

/// Calls `fn(begin, length)` for each character of the well-formed UTF-8 string `s`.
template <class Fn>
void for_each_char(std::string_view s, Fn&& fn) {
  for (std::size_t i = 0; i < s.size();) {
    int bad = 0;
    const int n = detail::utf8_sequence(s, i, bad);
    const std::size_t len = static_cast<std::size_t>(n > 0 ? n : bad);
    fn(i, len);
    i += len;
  }
}

/// GPT-2's byte ↔ character map (the table above).
class byte_map {
 public:
  byte_map() {
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      const char32_t c = printable ? static_cast<char32_t>(b) : next++;
      std::string u;
      append_utf8(u, c);
      to_char_[static_cast<std::size_t>(b)] = u;
      if (c < from_char_.size()) from_char_[c] = static_cast<std::int16_t>(b);
    }
  }
  /// The character (UTF-8) byte `b` is written as.
  const std::string& of(unsigned char b) const noexcept { return to_char_[b]; }
  /// The byte code point `c` stands for, or −1 when it stands for none.
  int byte_of(char32_t c) const noexcept { return c < from_char_.size() ? from_char_[c] : -1; }
  static const byte_map& instance() {
    static const byte_map m;
    return m;
  }

 private:
  std::array<std::string, 256> to_char_;
  std::array<std::int16_t, 0x144> from_char_ = filled();
  static std::array<std::int16_t, 0x144> filled() {
    std::array<std::int16_t, 0x144> a{};
    a.fill(-1);
    return a;
  }
};

}  // namespace tpx::inline v0::text
