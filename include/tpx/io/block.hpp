#pragma once
/// \file
/// `io::block<T>`: what the shard readers return — a std::vector whose new elements are left
/// unset for the read to write (std::vector<T>(n) would first zero every byte the read then
/// overwrites: a pass over a model's whole weights, and the page faults with it, for nothing).

#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace tpx::inline v0::io {

/// std::allocator, except that a value-initialised element is default-initialised: a trivially
/// constructible T is left as the memory was.
template <class T>
struct unset_allocator : std::allocator<T> {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = unset_allocator<U>;
  };
  unset_allocator() noexcept = default;
  template <class U>
  unset_allocator(const unset_allocator<U>&) noexcept {}

  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

/// A block of a tensor as a reader returns it: every element is written by the read.
template <class T>
using block = std::vector<T, unset_allocator<T>>;

}  // namespace tpx::inline v0::io
