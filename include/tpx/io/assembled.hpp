#pragma once
/// \file
/// A tensor a layer holds that the checkpoint stores in parts: fused q|k|v from `q_proj`,
/// `k_proj`, `v_proj`; gate|up from `gate_proj` and `up_proj`; every expert's gate|up
/// [E, 2I, H] from `experts.N.w1` and `experts.N.w3`. Each part is one checkpoint tensor placed
/// as a box at an origin of the assembled tensor; a part of fewer dims fills the trailing dims
/// (an expert's [I, H] is the box [1, I, H] at (e, 0, 0)).
///
///   qkv [(nq + 2·nkv)·d, H]      q_proj at (0, 0), k_proj at (nq·d, 0), v_proj at ((nq+nkv)·d, 0)
///   gate_up [E, 2I, H]           experts.e.w1 at (e, 0, 0), experts.e.w3 at (e, I, 0)
///
/// Reading a rank's block of the assembled tensor reads, from each part, exactly the elements of
/// the block that lie in it, so the bytes read are the shard's bytes and no rank materialises a
/// tensor it does not own. `part_placement` gives the placement each part inherits, so a plan
/// that places the checkpoint's tensors can be compared with what the layer holds.

#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tpx/io/block.hpp"
#include "tpx/io/checkpoint.hpp"

namespace tpx::inline v0::io {

/// One checkpoint tensor inside an assembled tensor.
struct tensor_part {
  std::string name;             ///< the checkpoint tensor
  std::vector<index_t> origin;  ///< where its first element sits in the assembled tensor
  std::vector<index_t> shape;   ///< the shape the model expects it to have; empty: any that fits
};

struct assembled_tensor {
  std::string name;  ///< for messages: the layer's tensor, e.g. `model.layers.0.self_attn.qkv`
  std::vector<index_t> shape;
  std::vector<tensor_part> parts;

  /// A tensor the checkpoint stores as it is.
  static assembled_tensor whole(std::string name, std::vector<index_t> shape) {
    std::vector<index_t> origin(shape.size(), 0);
    std::string file = name;
    return {std::move(name), shape, {{std::move(file), std::move(origin), shape}}};
  }
};

namespace detail {

/// The box a part of `part_shape` occupies in an assembled tensor of `n` dims: leading unit dims,
/// then the part's own.
inline std::vector<index_t> box_extent(const std::vector<index_t>& part_shape, std::size_t n) {
  std::vector<index_t> box(n - part_shape.size(), 1);
  box.insert(box.end(), part_shape.begin(), part_shape.end());
  return box;
}

/// Checks that the parts are checkpoint tensors whose boxes tile `t` exactly.
inline void expect_tiling(const checkpoint& ck, const assembled_tensor& t) {
  const std::size_t n = t.shape.size();
  index_t volume = 0;
  std::vector<std::vector<index_t>> boxes;
  for (const tensor_part& p : t.parts) {
    expect(ck.contains(p.name), "{}: the checkpoint {} has no tensor '{}', which {} is built from",
           t.name, ck.source().string(), p.name, t.name);
    const std::vector<index_t>& s = ck.info(p.name).shape;
    expect(p.shape.empty() || s == p.shape,
           "{}: tensor '{}' has shape {} but the model needs {} (for {})", ck.source().string(),
           p.name, shard::shape_text(s), shard::shape_text(p.shape), t.name);
    expect(p.origin.size() == n && s.size() <= n,
           "{}: part '{}' of shape {} cannot sit in a tensor of shape {}", t.name, p.name,
           shard::shape_text(s), shard::shape_text(t.shape));
    const std::vector<index_t> box = box_extent(s, n);
    for (std::size_t d = 0; d < n; ++d)
      expect(p.origin[d] >= 0 && p.origin[d] + box[d] <= t.shape[d],
             "{}: the checkpoint's '{}' has shape {}, which does not fit at {} of the model's "
             "tensor of shape {} (dim {}: {} + {} > {})",
             t.name, p.name, shard::shape_text(s), shard::shape_text(p.origin),
             shard::shape_text(t.shape), d, p.origin[d], box[d], t.shape[d]);
    for (std::size_t q = 0; q < boxes.size(); ++q) {
      bool apart = false;
      for (std::size_t d = 0; d < n && !apart; ++d)
        apart = p.origin[d] + box[d] <= t.parts[q].origin[d] ||
                t.parts[q].origin[d] + boxes[q][d] <= p.origin[d];
      expect(apart, "{}: the parts '{}' and '{}' overlap", t.name, t.parts[q].name, p.name);
    }
    volume += shard::element_count(box);
    boxes.push_back(box);
  }
  expect(volume == shard::element_count(t.shape),
         "{}: its parts cover {} of the {} elements of shape {}", t.name, volume,
         shard::element_count(t.shape), shard::shape_text(t.shape));
}

/// Along one dim: the pieces of `want` that fall in [lo, hi), in `want`'s local order, as
/// (interval relative to lo, position in the local block).
struct clipped {
  std::vector<shard::interval> part;  ///< in the part's coordinates
  std::vector<index_t> at;            ///< first local index of each, in the block
};
inline clipped clip(const shard::pieces& want, index_t lo, index_t hi) {
  clipped c;
  index_t local = 0;
  for (const shard::interval& i : want.parts) {
    const index_t b = std::max(i.begin, lo), e = std::min(i.end, hi);
    if (b < e) {
      c.part.push_back({b - lo, e - lo});
      c.at.push_back(local + (b - i.begin));
    }
    local += i.size();
  }
  return c;
}

/// For part `p` (of checkpoint shape `s`) and the block `sel` of the assembled tensor: the part's
/// own selection, and for every dim of the assembled tensor the block index of each of the part's
/// selected elements. Empty when the block holds none of the part.
struct part_map {
  shard::selection own;
  std::vector<std::vector<index_t>> where;
};
inline std::optional<part_map> map_part(const tensor_part& p, const std::vector<index_t>& s,
                                        const shard::selection& sel) {
  const std::size_t n = sel.dims.size();
  const std::vector<index_t> box = box_extent(s, n);
  part_map m;
  m.where.resize(n);
  for (std::size_t d = 0; d < n; ++d) {
    const clipped c = clip(sel.dims[d], p.origin[d], p.origin[d] + box[d]);
    if (c.part.empty()) return std::nullopt;
    if (d >= n - s.size()) m.own.dims.push_back({c.part});
    for (std::size_t k = 0; k < c.part.size(); ++k)
      for (index_t i = 0; i < c.part[k].size(); ++i) m.where[d].push_back(c.at[k] + i);
  }
  return m;
}

/// Copies between a part's selected elements (row-major in `part`) and their places in the
/// block of shape `block` (row-major in `out`): into the block, or out of it.
template <class T>
void move_part(const part_map& m, const std::vector<index_t>& block, T* out, T* part,
               bool into_block) {
  const std::size_t n = block.size();
  std::vector<index_t> stride(n, 1);
  for (std::size_t d = n; d-- > 1;) stride[d - 1] = stride[d] * block[d];
  const std::vector<index_t>& last = m.where[n - 1];
  std::vector<std::size_t> at(n - 1, 0);
  std::size_t from = 0;
  while (true) {
    index_t base = 0;
    for (std::size_t d = 0; d + 1 < n; ++d) base += m.where[d][at[d]] * stride[d];
    for (std::size_t k = 0; k < last.size();) {  // runs of consecutive block columns
      std::size_t e = k + 1;
      while (e < last.size() && last[e] == last[e - 1] + 1) ++e;
      T* b = out + base + last[k];
      T* q = part + from + k;
      std::memcpy(into_block ? b : q, into_block ? q : b, (e - k) * sizeof(T));
      k = e;
    }
    from += last.size();
    std::size_t d = n - 1;
    while (d > 0 && ++at[d - 1] == m.where[d - 1].size()) at[--d] = 0;
    if (d == 0) break;
  }
}

}  // namespace detail

/// Reads the block `sel` of the assembled tensor `t` into `out` (row-major, `sel.shape()`),
/// converting to T; returns the bytes read from the checkpoint.
template <class T>
std::uint64_t read_into(const checkpoint& ck, const assembled_tensor& t,
                        const shard::selection& sel, std::span<T> out) {
  detail::expect_tiling(ck, t);
  expect(sel.dims.size() == t.shape.size() && out.size() == static_cast<std::size_t>(sel.size()),
         "{}: a block of {} dims and {} elements cannot be read into {} elements of a tensor of "
         "shape {}",
         t.name, sel.dims.size(), sel.size(), out.size(), shard::shape_text(t.shape));
  if (t.parts.size() == 1 && ck.info(t.parts[0].name).shape == t.shape)  // stored as it is
    return ck.read_into<T>(t.parts[0].name, sel, out);
  std::uint64_t bytes = 0;
  block<T> tmp;
  for (const tensor_part& p : t.parts) {
    const std::optional<detail::part_map> m = detail::map_part(p, ck.info(p.name).shape, sel);
    if (!m) continue;
    tmp.resize(static_cast<std::size_t>(m->own.size()));
    bytes += ck.read_into<T>(p.name, m->own, std::span<T>(tmp));
    detail::move_part<T>(*m, sel.shape(), out.data(), tmp.data(), true);
  }
  return bytes;
}

/// The elements of part `part` (checkpoint shape `part_shape`) in `block`, the block `sel` of
/// the assembled tensor `t`: row-major over the part's own selection
/// (`part_placement(t, part, part_shape, p).of(rank)` when `sel` is `p.of(rank)`).
template <class T>
std::vector<T> part_of_block(const assembled_tensor& t, const tensor_part& part,
                             const std::vector<index_t>& part_shape, const shard::selection& sel,
                             std::span<const T> block) {
  expect(block.size() == static_cast<std::size_t>(sel.size()),
         "{}: a block of {} elements for a selection of {}", t.name, block.size(), sel.size());
  const std::optional<detail::part_map> m = detail::map_part(part, part_shape, sel);
  if (!m) return {};
  std::vector<T> out(static_cast<std::size_t>(m->own.size()));
  detail::move_part<T>(*m, sel.shape(), const_cast<T*>(block.data()), out.data(), false);
  return out;
}

/// Rank `rank`'s block of `t` under placement `p`, as T (written by the read, never zeroed first).
template <class T>
block<T> read(const checkpoint& ck, const assembled_tensor& t, const shard::placement& p, int rank,
              std::uint64_t* bytes = nullptr) {
  expect(p.shape == t.shape, "{}: the placement is for shape {} but the tensor has shape {}",
         t.name, shard::shape_text(p.shape), shard::shape_text(t.shape));
  detail::expect_tiling(ck, t);  // before allocating: the model's shape may be the config's error
  const shard::selection sel = p.of(rank);
  block<T> out(static_cast<std::size_t>(sel.size()));
  const std::uint64_t b = read_into<T>(ck, t, sel, std::span<T>(out));
  if (bytes != nullptr) *bytes += b;
  return out;
}

/// The placement part `part` of `t` inherits from `p` (the assembled tensor's), over the part's
/// own `part_shape` (shard::part_placement).
inline shard::placement part_placement(const assembled_tensor& t, const tensor_part& part,
                                       const std::vector<index_t>& part_shape,
                                       const shard::placement& p) {
  expect(p.shape == t.shape, "{}: the placement is for shape {} but the tensor has shape {}",
         t.name, shard::shape_text(p.shape), shard::shape_text(t.shape));
  return shard::part_placement(p, part.origin, part_shape, part.name);
}

}  // namespace tpx::inline v0::io
