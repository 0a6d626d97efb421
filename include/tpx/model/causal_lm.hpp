#pragma once
/// \file
/// `causal_lm<Mode, Backend, T>`: a decoder-only language model built from its checkpoint, each
/// rank reading only its own bytes, run forward and backward over the ranks of a communicator.
///
///   ids [T] ─ embedding (vocab-parallel) ─ N decoder layers ─ norm ─ LM head ─ logits [T, V_r]
///                                                                            ─ loss
///                                                                            (vocab-parallel)
///
///   mode        embedding            layers               head (untied)    logits on rank r
///   tensor      all-reduce           llama, mixtral, MLA  colwise          [T, V_r]
///   sequence    reduce-scatter       their SP forms       colwise_sp       [T, V_r]
///
/// MoE layers: TP inside experts (ep = 1), or whole experts per rank (ep = tp: masked local
/// experts + all-reduce in tensor mode, all-to-all-v dispatch in sequence mode). DeepSeek-style
/// layers run MLA attention (layer/mla_attention.hpp) in either mode.
///
/// The embedding is always vocab-parallel (transformers adds `embed_tokens: embedding_rowwise`
/// whenever a TP plan applies); a tied head is the embedding's own `head_forward`. Logits stay
/// vocab-sharded for the loss; `gather_logits` gives every rank all of them. Parameter gradients
/// land on each rank's own shard; `for_each_parameter` lists them with their placements.
///
/// For inference, `forward_cached` runs the next tokens of one or more sequences over a `cache` of
/// each layer's keys and values (this rank's KV heads only; `make_cache`); model/generate.hpp
/// generates with it.
///
/// Weights are read with `io::assembled_tensor`s (model/layout.hpp) at the placements the layers
/// themselves give (`weight_placement`, `qkv_options`, `gate_up_placement`, …), so a rank reads
/// exactly its shard's bytes: `bytes_read()` is that count.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "tpx/comm/collectives.hpp"
#include "tpx/io/assembled.hpp"
#include "tpx/io/gather.hpp"
#include "tpx/layer/cross_entropy.hpp"
#include "tpx/layer/decoder.hpp"
#include "tpx/layer/embedding.hpp"
#include "tpx/model/build.hpp"
#include "tpx/model/config.hpp"
#include "tpx/model/layout.hpp"

namespace tpx::inline v0::model {

/// Primary template: a backend whose GEMM engine does not compute in T.
template <layer::block_mode Mode, layer::backend_with_ops Backend, class T = double>
class causal_lm {
  static_assert(layer::detail::always_false<Backend>,
                "tpx::causal_lm: the backend's GEMM engine does not compute in T (the host's: "
                "float or double); to hold the weights in bf16, compute in float with "
                "layer::weights_in<Backend, bf16>");
};

template <layer::block_mode Mode, layer::backend_with_ops Backend, class T>
requires gemm::gemm_engine_of<typename Backend::engine, T, layer::weight_t<Backend, T>>
class causal_lm<Mode, Backend, T> {
  using styles = layer::block_styles<Mode>;
  static constexpr bool sp = styles::sp;

 public:
  using value_type = T;
  /// What the GEMM weights (embedding, projections, experts, head) are held as: T, or narrower
  /// under `layer::weights_in` (bf16: half the memory and half the bytes a decode step reads).
  using weight_type = layer::weight_t<Backend, T>;
  using engine_type = typename Backend::engine;
  using comm_type = typename Backend::communicator;
  using embedding_type = layer::vocab_embedding<
      std::conditional_t<sp, style::vocab_parallel_sp, style::vocab_parallel<>>, Backend, T>;
  using norm_type = layer::rms_norm<typename styles::norm, Backend, T>;
  using head_type = layer::linear<typename styles::column, Backend, T>;
  using attention_type = layer::attention_block<Mode, Backend, T>;
  using mlp_type = layer::swiglu_mlp<Mode, Backend, T>;
  using dense_layer = typename detail::decoder_layers<Mode, Backend, T>::dense;
  using moe_tp_layer = typename detail::decoder_layers<Mode, Backend, T>::moe_tp;
  using moe_ep_layer = typename detail::decoder_layers<Mode, Backend, T>::moe_ep;
  using layer_type = typename detail::decoder_layers<Mode, Backend, T>::any;
  static constexpr layer::block_mode mode = Mode;

  /// Builds this rank's shard of the model of config `c` from the checkpoint `ck`.
  causal_lm(engine_type& engine, comm_type& comm, const config& c, const io::checkpoint& ck,
            options o = {})
      : engine_(&engine),
        comm_(&comm),
        config_(c),
        options_(o),
        layout_(model::checkpoint_layout(c, ck)),
        reader_(comm.rank(), o.on_read) {
    const int tp = comm.size();
    expect(o.ep == 1 || o.ep == tp,
           "{}: ep = {} must be 1 or the group size {} (experts live on the TP ranks)", c.source,
           o.ep, tp);
    expect(o.ep == 1 || c.is_moe(),
           "{}: ep = {} asks for expert parallelism but model_type '{}' "
           "has no experts",
           c.source, o.ep, c.dims.model_type);
    const index_t h = c.dims.hidden_size, v = c.dims.vocab_size;
    const layer::embedding_options eo{.name = "model.embed_tokens", .vocab = v, .hidden = h};
    embed_.emplace(
        shard::from_shard, engine, comm,
        detail::as_matrix(reader_.template read<weight_type>(
                              ck, layout_.embed, embedding_type::weight_placement(eo, tp)),
                          h),
        eo);
    for (std::size_t l = 0; l < layout_.layers.size(); ++l)
      layers_.push_back(detail::build_layer<Mode, Backend, T>(
          engine, comm, c, o, ck, layout_.layers[l], static_cast<index_t>(l), reader_));
    norm_.emplace(
        comm, reader_.read(ck, layout_.norm, norm_type::weight_placement(layout_.norm.name, h, tp)),
        c.rms_norm_eps, "model.norm");
    if (layout_.head) {
      const layer::linear_options ho{.name = "lm_head", .out_features = v, .in_features = h};
      head_.emplace(shard::from_shard, engine, comm,
                    detail::as_matrix(reader_.template read<weight_type>(
                                          ck, *layout_.head, head_type::weight_placement(ho, tp)),
                                      h),
                    std::span<const T>{}, ho);
    }
    loss_.emplace(comm, layer::cross_entropy_options{
                            .name = "loss", .vocab = v, .vocab_range = vocab_range()});
  }

  const config& model_config() const noexcept { return config_; }
  const model::layout& layout() const noexcept { return layout_; }
  index_t vocab() const noexcept { return config_.dims.vocab_size; }
  /// The vocab columns [begin, end) of this rank's logits.
  shard::interval vocab_range() const { return head_ ? head_->slice() : embed_->vocab_range(); }
  /// Bytes this rank read from the checkpoint.
  std::uint64_t bytes_read() const noexcept { return reader_.bytes_read(); }
  /// Bytes of parameters this rank holds (its shards: GEMM weights in `weight_type`, the rest in
  /// T).
  std::uint64_t bytes_held() const {
    std::uint64_t n = 0;
    for_each_parameter([&](const std::string&, const shard::placement&, auto w,
                           std::span<const T>) { n += w.size_bytes(); });
    return n;
  }
  /// Where each checkpoint tensor's shard sits on this model's ranks (name, placement), as the
  /// layers read them.
  std::vector<std::pair<std::string, shard::placement>> checkpoint_placements(
      const io::checkpoint& ck) const {
    std::vector<std::pair<std::string, shard::placement>> out;
    for_each_parameter(
        [&](const std::string& name, const shard::placement& p, auto, std::span<const T>) {
          const io::assembled_tensor* t = find(name);
          for (const io::tensor_part& part : t->parts)
            out.emplace_back(part.name, io::part_placement(*t, part, ck.info(part.name).shape, p));
        });
    return out;
  }

  /// Writes the model back as one full safetensors file at `path`, every checkpoint tensor under
  /// its own name and dtype, gathered from the ranks' shards (io::save: all ranks call it; the
  /// file appears whole or not at all). A model saved as loaded gives back the checkpoint's
  /// tensors bit for bit (T, and bf16 weights from a bf16 file, hold every value exactly).
  void save(const std::filesystem::path& path,
            const std::map<std::string, std::string>& metadata = {{"format", "pt"}}) const {
    std::vector<std::vector<std::byte>> data;
    std::vector<io::shard_bytes> shards;
    const int rank = comm_->rank();
    for_each_parameter([&]<class V>(const std::string& name, const shard::placement& p,
                                    std::span<const V> w, std::span<const T>) {
      const io::assembled_tensor* t = find(name);
      for (const io::tensor_part& part : t->parts) {
        const auto& [dtype, shape] = reader_.file_tensor(part.name);
        const shard::placement pp = io::part_placement(*t, part, shape, p);
        const std::vector<V> block = io::part_of_block<V>(*t, part, shape, p.of(rank), w);
        data.push_back(io::to_bytes<V>(block, dtype, part.name));
        shards.push_back({{part.name, dtype, shape}, pp, data.back()});
      }
    });
    io::save(*comm_, path, shards, metadata);
  }

  /// Runs the model on token ids [T] (the same on every rank); returns this rank's logits
  /// [T, V_r] (columns `vocab_range()`).
  matrix_view<const T> forward(std::span<const std::int64_t> ids) {
    const index_t tokens = static_cast<index_t>(ids.size());
    expect(tokens >= 1, "{}: the model needs at least one token id", config_.source);
    return run(ids, [&](auto& layer, std::size_t, matrix_view<const T> x, matrix_view<T> y) {
      layer.forward(x, y, tokens);
    });
  }

  /// One rank's keys and values of every decoder layer for inference: `sequences` sequences of
  /// up to `capacity` tokens each, this rank's KV heads only, allocated once.
  struct cache {
    std::vector<layer::kv_cache<T>> layers;
    /// Positions of sequence `seq` filled so far.
    index_t length(index_t seq) const { return layers.empty() ? 0 : layers[0].length(seq); }
    index_t capacity() const { return layers.empty() ? 0 : layers[0].capacity(); }
    /// Bytes this rank's cache holds: 2 · kv_r · head_dim · rows · sequences · sizeof(T) summed
    /// over the layers (rows: the capacity, or a sliding-window layer's window); under MLA
    /// (kv_lora_rank + qk_rope_head_dim) · rows · sequences · sizeof(T), the same on every rank.
    index_t bytes() const {
      index_t n = 0;
      for (const layer::kv_cache<T>& l : layers) n += l.bytes();
      return n;
    }
    void clear(index_t seq) {
      for (layer::kv_cache<T>& l : layers) l.clear(seq);
    }
  };
  cache make_cache(index_t sequences, index_t capacity) {
    cache c;
    for (layer_type& l : layers_)
      std::visit(
          [&](auto& layer) {
            c.layers.push_back(layer.attention().make_cache(sequences, capacity));
          },
          l);
    return c;
  }

  /// Runs the next tokens `ids` of sequence `seq` (the same on every rank), attending over the
  /// keys and values `kv` holds for its earlier tokens and appending theirs; returns this rank's
  /// logits of these tokens, [n, V_r]. The logits equal those of `forward` on the whole prefix.
  /// Keeps nothing for backward.
  matrix_view<const T> forward_cached(std::span<const std::int64_t> ids, cache& kv, index_t seq) {
    const layer::segment one{seq, static_cast<index_t>(ids.size())};
    return forward_cached(ids, kv, std::span(&one, 1));
  }
  /// The same for several sequences in one step: `ids` packs each sequence's next tokens in the
  /// order of `segments` (its slot in `kv` and its token count; each slot once). Row r of the
  /// logits belongs to the segment whose tokens it packs; no sequence attends to another.
  matrix_view<const T> forward_cached(std::span<const std::int64_t> ids, cache& kv,
                                      std::span<const layer::segment> segments) {
    const index_t tokens = static_cast<index_t>(ids.size());
    expect(tokens >= 1, "{}: a step needs at least one token id", config_.source);
    expect(kv.layers.size() == layers_.size(), "{}: the cache holds {} layers but the model has {}",
           config_.source, kv.layers.size(), layers_.size());
    index_t packed = 0;
    for (const layer::segment& g : segments) {
      expect(g.tokens >= 1, "{}: sequence {} of the step has no tokens", config_.source, g.seq);
      if (!kv.layers.empty()) kv.layers[0].expect_room(g.seq, g.tokens, config_.source);
      packed += g.tokens;
    }
    expect(packed == tokens, "{}: the segments hold {} tokens but the step has {} ids",
           config_.source, packed, tokens);
    matrix_view<const T> logits =
        run(ids, [&](auto& layer, std::size_t l, matrix_view<const T> x, matrix_view<T> y) {
          layer.forward_cached(x, y, tokens, kv.layers[l], segments);
        });
    cached_ = true;
    return logits;
  }

  /// This rank's logits of the last forward, [T, V_r].
  matrix_view<const T> logits() const {
    return make_matrix<const T>(logits_.data(), static_cast<index_t>(ids_.size()),
                                vocab_range().size());
  }
  /// Every rank's logits of the last forward, all-gathered: [T, V] row-major on every rank.
  std::vector<T> gather_logits() { return gather(logits()); }
  /// Rows `rows` of the last forward's logits, all-gathered: [rows.size(), V] on every rank (a
  /// generation step gathers only the positions it chooses from).
  std::vector<T> gather_logits(std::span<const index_t> rows) {
    const matrix_view<const T> all = logits();
    const index_t k = static_cast<index_t>(rows.size()), vr = all.cols();
    const matrix_view<T> picked = detail_sized(picked_, k, vr);
    for (index_t i = 0; i < k; ++i) {
      const index_t r = rows[static_cast<std::size_t>(i)];
      expect(r >= 0 && r < all.rows(), "{}: row {} is outside the last forward's {} rows",
             config_.source, r, all.rows());
      for (index_t c = 0; c < vr; ++c) picked(i, c) = all(r, c);
    }
    return gather(picked);
  }

  /// The mean cross-entropy of the last forward's logits against `targets` [T] (ignore_index
  /// −100 skips a token), the same on every rank.
  T loss(std::span<const std::int64_t> targets) {
    targets_.assign(targets.begin(), targets.end());
    return loss_->forward(logits(), targets);
  }

  /// Gradients of the last loss with respect to every parameter shard (overwritten).
  void backward() {
    const index_t tokens = static_cast<index_t>(ids_.size()), h = config_.dims.hidden_size;
    expect(tokens > 0 && static_cast<index_t>(targets_.size()) == tokens,
           "{}: backward needs a forward and a loss on as many tokens", config_.source);
    expect(!cached_,
           "{}: backward needs a forward; forward_cached (inference) keeps nothing for backward",
           config_.source);
    const index_t n = local_tokens(tokens);
    const matrix_view<T> dlogits = detail_sized(dlogits_, tokens, vocab_range().size());
    loss_->backward(logits(), targets_, dlogits);
    embed_->zero_grad();
    const std::size_t last = layers_.size();
    const matrix_view<T> dn = detail_sized(dnorm_, n, h), dx = detail_sized(dx_, n, h),
                         dy = detail_sized(dy_, n, h);
    if (head_)
      head_->backward(act(last + 1, n), dlogits, dn);
    else
      embed_->head_backward(act(last + 1, n), dlogits, dn);
    norm_->backward(act(last, n), dn, dy);
    for (std::size_t l = last; l-- > 0;) {
      std::visit([&](auto& layer) { layer.backward(act(l, n), dy, dx, tokens); }, layers_[l]);
      std::swap_ranges(dx.data(), dx.data() + dx.size(), dy.data());
    }
    embed_->backward(ids_, dy);
  }

  /// Calls `fn(name, placement, value, grad)` for every parameter tensor this model holds: its
  /// name (the assembled tensor's, model/layout.hpp), where each rank's shard sits, and this
  /// rank's shard and gradient (row-major, the placement's block). The value is a
  /// `std::span<const weight_type>` for GEMM weights, `std::span<const T>` for the others (the
  /// same type unless the backend is a `layer::weights_in`); the gradient always T.
  template <class Fn>
  void for_each_parameter(Fn&& fn) const {
    const int tp = comm_->size();
    const auto span = [](auto v) {
      using V = std::remove_const_t<std::remove_pointer_t<decltype(v.data())>>;
      return std::span<const V>(v.data(), static_cast<std::size_t>(v.size()));
    };
    const auto linear = [&](const io::assembled_tensor& w,
                            const std::optional<io::assembled_tensor>& b, const auto& l) {
      fn(w.name, l.weight_placement(), span(l.weight()), span(l.weight_grad()));
      if (b) fn(b->name, l.bias_placement(), l.bias(), l.bias_grad());
    };
    const auto norm = [&](const io::assembled_tensor& w, const norm_type& nrm) {
      fn(w.name, norm_type::weight_placement(w.name, nrm.features(), tp), nrm.weight(),
         nrm.weight_grad());
    };
    fn(layout_.embed.name, embedding_type::weight_placement(embedding_options(), tp),
       span(embed_->weight()), span(embed_->weight_grad()));
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const layer_layout& l = layout_.layers[i];
      std::visit(
          [&](auto& layer) {
            norm(l.input_norm, layer.input_norm());
            auto& attn = layer.attention();
            if constexpr (requires { attn.kv_b_proj(); }) {  // MLA
              const mla_layout& m = *l.mla;
              if (m.q_a) {
                linear(*m.q_a, m.q_a_bias, *attn.q_a_proj());
                fn(m.q_a_norm->name, detail::whole(*m.q_a_norm, tp), attn.q_a_norm(),
                   attn.q_a_norm_grad());
              }
              linear(m.q, std::nullopt, attn.q_proj());
              linear(m.kv_a, m.kv_a_bias, attn.kv_a_proj());
              fn(m.kv_a_norm.name, detail::whole(m.kv_a_norm, tp), attn.kv_a_norm(),
                 attn.kv_a_norm_grad());
              linear(m.kv_b, std::nullopt, attn.kv_b_proj());
              linear(l.o, l.o_bias, attn.o_proj());
            } else {
              linear(*l.qkv, l.qkv_bias, attn.qkv());
              linear(l.o, l.o_bias, attn.o());
              if (l.q_norm) {
                auto& core = attn.core();
                fn(l.q_norm->name, detail::whole(*l.q_norm, tp), core.q_norm(),
                   std::span<const T>(core.q_norm_grad()));
                fn(l.k_norm->name, detail::whole(*l.k_norm, tp), core.k_norm(),
                   std::span<const T>(core.k_norm_grad()));
              }
            }
            norm(l.post_norm, layer.post_norm());
            auto& ffn = layer.ffn();
            if constexpr (requires { ffn.gate_up(); }) {
              linear(*l.gate_up, l.gate_up_bias, ffn.gate_up());
              linear(*l.down, l.down_bias, ffn.down());
            } else {
              linear(*l.router, std::nullopt, ffn.router());
              if (l.router_bias) {  // a buffer, not trained: its gradient is zero
                const std::vector<double>& b = ffn.routing().selection_bias;
                const std::vector<T> value(b.begin(), b.end()), zero(b.size(), T(0));
                fn(l.router_bias->name, detail::whole(*l.router_bias, tp),
                   std::span<const T>(value), std::span<const T>(zero));
              }
              auto& ex = ffn.experts_layer();
              using ex_t = std::remove_cvref_t<decltype(ex)>;
              const layer::experts_options eo = detail::experts_options(config_, l);
              fn(l.experts_gate_up->name, ex_t::gate_up_placement(eo, tp),
                 span(ex.gate_up_weight()), span(ex.gate_up_grad()));
              fn(l.experts_down->name, ex_t::down_placement(eo, tp), span(ex.down_weight()),
                 span(ex.down_grad()));
              if (l.shared_gate_up) {
                fn(l.shared_gate_up->name, ex_t::shared_gate_up_placement(eo, tp),
                   span(ex.shared_gate_up_weight()), span(ex.shared_gate_up_grad()));
                fn(l.shared_down->name, ex_t::shared_down_placement(eo, tp),
                   span(ex.shared_down_weight()), span(ex.shared_down_grad()));
              }
              if (l.shared_gate) linear(*l.shared_gate, std::nullopt, *ex.shared_gate());
            }
          },
          const_cast<layer_type&>(layers_[i]));
    }
    norm(layout_.norm, *norm_);
    if (head_) linear(*layout_.head, std::nullopt, *head_);
  }

 private:
  using buffer = typename Backend::template buffer<T>;

  static matrix_view<T> detail_sized(buffer& b, index_t rows, index_t cols) {
    return layer::detail::sized(b, rows, cols);
  }
  static std::span<T> detail_scratch(buffer& b, index_t n) { return layer::detail::scratch(b, n); }
  matrix_view<T> act(std::size_t l, index_t n) {
    return make_matrix(acts_[l].data(), n, config_.dims.hidden_size);
  }
  index_t local_tokens(index_t tokens) const {
    return sp ? tokens_.of(tokens, comm_->size(), comm_->rank()) : tokens;
  }
  layer::embedding_options embedding_options() const {
    return {.name = "model.embed_tokens", .vocab = vocab(), .hidden = config_.dims.hidden_size};
  }
  const io::assembled_tensor* find(const std::string& name) const {
    const io::assembled_tensor* found = nullptr;
    layout_.for_each([&](const io::assembled_tensor& t) {
      if (t.name == name) found = &t;
    });
    expect(found != nullptr, "causal_lm: no tensor named '{}'", name);
    return found;
  }

  /// Every rank's vocab columns of `local` [k, V_r], all-gathered: [k, V] row-major.
  std::vector<T> gather(matrix_view<const T> local) {
    const index_t k = local.rows();
    std::vector<T> full(static_cast<std::size_t>(k * vocab()));
    const shard::partition p =
        head_ ? head_->partition()
              : embedding_type::weight_placement(embedding_options(), comm_->size()).partition;
    comm::all_gather_cols<comm_type, T>(*comm_, local, make_matrix(full.data(), k, vocab()), p,
                                        detail_scratch(gather_, comm::cols_scratch(k, p)));
    return full;
  }

  /// embedding → the decoder layers (`step(layer, l, x, y)`) → norm → LM head: this rank's
  /// logits of `ids`.
  template <class Step>
  matrix_view<const T> run(std::span<const std::int64_t> ids, Step&& step) {
    const index_t tokens = static_cast<index_t>(ids.size()), h = config_.dims.hidden_size;
    ids_.assign(ids.begin(), ids.end());
    cached_ = false;
    const index_t n = local_tokens(tokens);
    acts_.resize(layers_.size() + 2);
    embed_->forward(ids, detail_sized(acts_[0], n, h));
    for (std::size_t l = 0; l < layers_.size(); ++l)
      std::visit([&](auto& layer) { step(layer, l, act(l, n), detail_sized(acts_[l + 1], n, h)); },
                 layers_[l]);
    const std::size_t last = layers_.size();
    norm_->forward(act(last, n), detail_sized(acts_[last + 1], n, h));
    const matrix_view<T> logits = detail_sized(logits_, tokens, vocab_range().size());
    if (head_)
      head_->forward(act(last + 1, n), logits);
    else
      embed_->head_forward(act(last + 1, n), logits);
    return logits;
  }

  engine_type* engine_;
  comm_type* comm_;
  config config_;
  options options_;
  model::layout layout_;
  detail::shard_reader<T> reader_;  // counts the bytes read; knows each file tensor's dtype
  std::optional<embedding_type> embed_;
  std::vector<layer_type> layers_;
  std::optional<norm_type> norm_;
  std::optional<head_type> head_;
  std::optional<layer::vocab_cross_entropy<Backend, T>> loss_;
  mutable layer::detail::token_shards tokens_;
  std::vector<std::int64_t> ids_, targets_;
  bool cached_ = false;  // the last run was forward_cached (nothing kept for backward)
  std::vector<buffer> acts_;
  buffer logits_, dlogits_, dnorm_, dx_, dy_, gather_, picked_;
};

}  // namespace tpx::inline v0::model
