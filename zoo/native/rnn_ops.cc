// zoo's native recurrences for the CPU fast path (zoo/fast_rnn.py): the sequential part of
// an LSTM, a GRU (reset_after) and the plain tanh recurrence, forward and backward, as
// TensorFlow ops.  What is not sequential (the input projection, the weight gradients) stays
// in TensorFlow as large matrix products.
//
// The batch is cut into blocks of rows, one per intra-op thread; each block runs all its time
// steps on its thread (the rows of a batch do not interact), so the threads never wait for
// each other inside the loop.  Per step: one product h . U into the pre-activations, on
// Eigen's blocked product kernel with U packed once per call (PackedRight), then the gates
// with Eigen's vectorised tanh (the logistic function as a tanh, see Sigmoid).  Layouts are
// Keras's:
//
//   ZooLstmForward(xp (B,T,4U), h0, c0 (B,U), u (U,4U), mask) -> hs, cs (B,T,U),
//       gates (B,T,4U), h_prev (B,T,U): gates i, f, c, o along the last axis, stored
//       activated; h_prev the state each step starts from (h0, then hs shifted by a step),
//       for the recurrent kernel's gradient
//   ZooLstmBackward(gates, cs, c0, d_hs (B,T,U), d_h, d_c (B,U), u, mask)
//       -> dz (B,T,4U), dh0, dc0
//   ZooGruForward(xp (B,T,3U), h0 (B,U), u (U,3U), rb (U), mask) -> hs (B,T,U),
//       gates (B,T,3U), r_h (B,T,U), h_prev (B,T,U): gates z, r and the candidate, stored
//       activated; xp holds the input projection plus the recurrent biases of z and r; rb is
//       the candidate's recurrent bias
//   ZooGruBackward(gates, r_h, hs, h0, d_hs, d_h, u, mask) -> d_xp, d_inner (B,T,3U), dh0
//   ZooTanhForward(xp (B,T,U), h0 (B,U), u (U,U), mask) -> hs, h_prev (B,T,U)
//   ZooTanhBackward(hs, d_hs, d_h, u, mask) -> da (B,T,U) [pre-activation gradients], dh0
//
// Sequences are batch-major, as Keras layers take and give them (no transposes around the
// ops): a block's rows at step t lie T * n floats apart (Rows).  mask is (B, T), 1 where a
// step is used and 0 where it is masked, or empty (shape (0,)) for none.  A masked step
// carries the states (hs and cs hold the carried ones) and passes their gradients straight
// through, as Keras's masking does.

#define EIGEN_USE_THREADS
#include <algorithm>
#include <functional>
#include <initializer_list>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "unsupported/Eigen/CXX11/Tensor"

using namespace tensorflow;  // NOLINT
using shape_inference::InferenceContext;
using shape_inference::DimensionHandle;
using shape_inference::ShapeHandle;

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapM = Eigen::Map<RowMat>;
using Stride = Eigen::OuterStride<>;
using SMap = Eigen::Map<RowMat, 0, Stride>;
using CSMap = Eigen::Map<const RowMat, 0, Stride>;

// Rows r0 .. r0 + b - 1 of step t of a batch-major (B, T, n) sequence.
SMap Rows(float* seq, int64_t t, int64_t r0, int64_t b, int64_t T, int64_t n) {
  return SMap(seq + (r0 * T + t) * n, b, n, Stride(T * n));
}
CSMap Rows(const float* seq, int64_t t, int64_t r0, int64_t b, int64_t T, int64_t n) {
  return CSMap(seq + (r0 * T + t) * n, b, n, Stride(T * n));
}
// Rows r0 .. r0 + b - 1 of a (B, n) state.
CSMap StateRows(const float* state, int64_t r0, int64_t b, int64_t n) {
  return CSMap(state + r0 * n, b, n, Stride(n));
}

// Rows per block: at least this many, so a step's product stays worth a thread.
constexpr int64_t kMinRows = 8;

// Runs fn(row_begin, row_end) over blocks of rows, one block per intra-op thread.
void ForRowBlocks(OpKernelContext* ctx, int64_t batch,
                  const std::function<void(int64_t, int64_t)>& fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>(workers->num_threads, batch / kMinRows));
  if (blocks == 1) {
    fn(0, batch);
    return;
  }
  Shard(blocks, workers->workers, blocks, /*cost_per_unit=*/1LL << 40,
        [&](int64_t first, int64_t last) {
          for (int64_t k = first; k < last; ++k) {
            fn(batch * k / blocks, batch * (k + 1) / blocks);
          }
        });
}

// The shapes of one call: T steps, B rows, U units, G = gates * U columns.
struct Dims {
  int64_t T, B, U, G;
};

// Checks x (B, T, gates * U) against u (U, gates * U); a one-line error otherwise.
Status SeqDims(const Tensor& x, const Tensor& u, int gates, const char* op, Dims* d) {
  if (x.dims() != 3 || u.dims() != 2 || u.dim_size(1) != gates * u.dim_size(0) ||
      x.dim_size(2) != u.dim_size(1)) {
    return errors::InvalidArgument(op, ": expected a (B, T, ", gates, "U) sequence and a (U, ",
                                   gates, "U) recurrent kernel, got ",
                                   x.shape().DebugString(), " and ", u.shape().DebugString());
  }
  *d = Dims{x.dim_size(1), x.dim_size(0), u.dim_size(0), u.dim_size(1)};
  return OkStatus();
}

Status Expect(const Tensor& t, const TensorShape& shape, const char* op, const char* name) {
  if (t.shape() != shape) {
    return errors::InvalidArgument(op, ": ", name, " must have shape ", shape.DebugString(),
                                   ", got ", t.shape().DebugString());
  }
  return OkStatus();
}

const float* In(OpKernelContext* ctx, int i) { return ctx->input(i).flat<float>().data(); }

// The mask input: nullptr for none (an empty tensor), else (B, T); an error otherwise.
Status MaskOf(const Tensor& m, const Dims& d, const char* op, const float** out) {
  *out = nullptr;
  if (m.NumElements() == 0 && m.dims() == 1) return OkStatus();
  TF_RETURN_IF_ERROR(Expect(m, TensorShape({d.B, d.T}), op, "mask"));
  *out = m.flat<float>().data();
  return OkStatus();
}

// A block's mask at one step: row r is masked where m[r * T] == 0 (m: the (B, T) mask at the
// block's first row and the step), or none.
struct StepMask {
  const float* m;
  int64_t T;
  StepMask(const float* mask, int64_t t, int64_t r0, int64_t T)
      : m(mask ? mask + r0 * T + t : nullptr), T(T) {}
  bool Masked(int64_t r) const { return m[r * T] == 0.0f; }
};

// For each masked row r of a block: dst row r = src row r.
template <typename Src, typename Dst>
void CarryMasked(const StepMask& mt, const Src& src, Dst&& dst) {
  if (mt.m == nullptr) return;
  for (int64_t r = 0; r < dst.rows(); ++r)
    if (mt.Masked(r)) dst.row(r) = src.row(r);
}

template <typename Dst>
void ZeroMasked(const StepMask& mt, Dst&& dst) {
  if (mt.m == nullptr) return;
  for (int64_t r = 0; r < dst.rows(); ++r)
    if (mt.Masked(r)) dst.row(r).setZero();
}

float* Out(OpKernelContext* ctx, int i, const TensorShape& shape) {
  Tensor* t = nullptr;
  Status s = ctx->allocate_output(i, shape, &t);
  if (!s.ok()) {
    ctx->SetStatus(s);
    return nullptr;
  }
  return t->flat<float>().data();
}

// A buffer aligned for Eigen's packed panels.
using Scratch = std::vector<float, Eigen::aligned_allocator<float>>;

// The right-hand factor R (K, N) of every step's product out (b, N) += x (b, K) . R, packed
// once per call into the panels of Eigen's blocked product kernel (gebp), instead of once per
// step as a plain Eigen product does: at these sizes packing R cost about a fifth of a step.
// Built from u (U, G) row-major: R = u (K = U, N = G) for h . u, or R = u^T (K = G, N = U)
// for dz . u^T.  In Eigen's column-major terms each step computes out^T += R^T . x^T, so R^T
// is the packed left-hand side and the step's few rows x^T the (cheaply packed) right-hand one.
class PackedRight {
 public:
  using Index = Eigen::Index;
  using Traits = Eigen::internal::gebp_traits<float, float>;
  template <int Order>
  using In = Eigen::internal::const_blas_data_mapper<float, Index, Order>;
  using Res = Eigen::internal::blas_data_mapper<float, Index, Eigen::ColMajor, Eigen::Unaligned, 1>;
  static constexpr Index kDepth = 256;  // K is packed and multiplied in slices of this depth

  PackedRight(const Tensor& u, bool transposed)
      : K_(transposed ? u.dim_size(1) : u.dim_size(0)),
        N_(transposed ? u.dim_size(0) : u.dim_size(1)),
        packed_(K_ * N_) {
    const float* r = u.flat<float>().data();
    for (Index k = 0; k < K_; k += kDepth) {
      const Index kc = std::min(kDepth, K_ - k);
      float* dst = packed_.data() + k * N_;
      if (transposed) {  // R^T (N, K) is u itself, row-major
        Eigen::internal::gemm_pack_lhs<float, Index, In<Eigen::RowMajor>, Traits::mr,
                                       Traits::LhsProgress, Traits::LhsPacket4Packing,
                                       Eigen::RowMajor>()(
            dst, In<Eigen::RowMajor>(r, K_).getSubMapper(0, k), kc, N_);
      } else {  // R^T (N, K) is u (K, N) row-major read column-major
        Eigen::internal::gemm_pack_lhs<float, Index, In<Eigen::ColMajor>, Traits::mr,
                                       Traits::LhsProgress, Traits::LhsPacket4Packing,
                                       Eigen::ColMajor>()(
            dst, In<Eigen::ColMajor>(r, N_).getSubMapper(0, k), kc, N_);
      }
    }
  }

  // Scratch floats for MulAdd's packed x of up to b rows (one buffer per thread).
  Index ScratchSize(Index b) const {
    return std::min(kDepth, K_) * (b + Traits::nr);
  }

  // out (b, N) += x (b, K) . R, for row-major x and out with any row strides
  template <typename X, typename Out>
  void MulAdd(const X& x, Out&& out, float* scratch) const {
    Eigen::internal::gemm_pack_rhs<float, Index, In<Eigen::ColMajor>, Traits::nr,
                                   Eigen::ColMajor> pack;
    Eigen::internal::gebp_kernel<float, float, Index, Res, Traits::mr, Traits::nr, false, false>
        gebp;
    const In<Eigen::ColMajor> xt(x.data(), x.outerStride());
    const Res res(out.data(), out.outerStride());
    for (Index k = 0; k < K_; k += kDepth) {
      const Index kc = std::min(kDepth, K_ - k);
      pack(scratch, xt.getSubMapper(k, 0), kc, x.rows());
      gebp(res, packed_.data() + k * N_, scratch, N_, kc, x.rows(), 1.0f);
    }
  }

 private:
  const Index K_, N_;
  Scratch packed_;
};

// The logistic function as tanh: 1/(1 + e^-x) = (1 + tanh(x/2)) / 2, within 1.2e-7 of
// Eigen's logistic (absolute: gates scale other values, so their absolute error is what
// carries) and about 1.7x faster in its vectorised form here.
template <typename A>
auto Sigmoid(const A& x) -> decltype(0.5f + 0.5f * (0.5f * x).tanh()) {
  return 0.5f + 0.5f * (0.5f * x).tanh();
}

// Shape functions.  Each first checks every input's rank (a mask is an empty vector, for
// none, or a (B, T) matrix), that the recurrent kernel u is (U, gates * U) and that the first
// input's last dimension is u's second, so a direct call with wrong ranks is an error in the
// caller's language, never a read outside a shape; then sets outputs shaped like inputs, or
// (B, T, U) from a sequence and a state.
constexpr int kMask = -1;

Status CheckShapes(InferenceContext* c, std::initializer_list<int> ranks, int u_input,
                   int gates) {
  int i = 0;
  for (int rank : ranks) {
    ShapeHandle checked;
    if (rank == kMask) {
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(i), 1, &checked));
      TF_RETURN_IF_ERROR(c->WithRankAtMost(checked, 2, &checked));
      DimensionHandle dim;
      if (c->Rank(checked) == 1) {
        TF_RETURN_IF_ERROR(c->WithValue(c->Dim(checked, 0), 0, &dim));
      } else if (c->RankKnown(checked)) {  // (B, T) like the first input, checked above
        TF_RETURN_IF_ERROR(c->Merge(c->Dim(checked, 0), c->Dim(c->input(0), 0), &dim));
        TF_RETURN_IF_ERROR(c->Merge(c->Dim(checked, 1), c->Dim(c->input(0), 1), &dim));
      }
    } else {
      TF_RETURN_IF_ERROR(c->WithRank(c->input(i), rank, &checked));
    }
    ++i;
  }
  ShapeHandle u = c->input(u_input);
  DimensionHandle width, merged;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(u, 0), gates, &width));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(u, 1), width, &merged));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(c->input(0), 2), merged, &merged));
  return OkStatus();
}

// (B, T, U) from a checked (B, T, .) sequence and a checked (B, U) state.
ShapeHandle Seq(InferenceContext* c, int seq_input, int state_input) {
  ShapeHandle x = c->input(seq_input), s = c->input(state_input);
  return c->MakeShape({c->Dim(x, 0), c->Dim(x, 1), c->Dim(s, 1)});
}

}  // namespace

// ------------------------------------------------------------------------------- LSTM

REGISTER_OP("ZooLstmForward")
    .Input("xp: float").Input("h0: float").Input("c0: float").Input("u: float")
    .Input("mask: float")
    .Output("hs: float").Output("cs: float").Output("gates: float").Output("h_prev: float")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(CheckShapes(c, {3, 2, 2, 2, kMask}, 3, 4));
      c->set_output(0, Seq(c, 0, 1));
      c->set_output(1, Seq(c, 0, 1));
      c->set_output(2, c->input(0));
      c->set_output(3, Seq(c, 0, 1));
      return OkStatus();
    });

REGISTER_OP("ZooLstmBackward")
    .Input("gates: float").Input("cs: float").Input("c0: float").Input("d_hs: float")
    .Input("d_h: float").Input("d_c: float").Input("u: float").Input("mask: float")
    .Output("dz: float").Output("dh0: float").Output("dc0: float")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(CheckShapes(c, {3, 3, 2, 3, 2, 2, 2, kMask}, 6, 4));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(4));
      c->set_output(2, c->input(5));
      return OkStatus();
    });

class ZooLstmForwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const char* op = "ZooLstmForward";
    Dims d;
    OP_REQUIRES_OK(ctx, SeqDims(ctx->input(0), ctx->input(3), 4, op, &d));
    const int64_t T = d.T, B = d.B, U = d.U, G = d.G;
    const TensorShape state({B, U}), seq({B, T, U});
    OP_REQUIRES_OK(ctx, Expect(ctx->input(1), state, op, "h0"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(2), state, op, "c0"));
    const float* mask;
    OP_REQUIRES_OK(ctx, MaskOf(ctx->input(4), d, op, &mask));
    const float *xp = In(ctx, 0), *h0 = In(ctx, 1), *c0 = In(ctx, 2);
    const PackedRight um(ctx->input(3), false);
    float* hs = Out(ctx, 0, seq);
    float* cs = Out(ctx, 1, seq);
    float* gates = Out(ctx, 2, ctx->input(0).shape());
    float* h_prevs = Out(ctx, 3, seq);
    if (!ctx->status().ok() || T == 0 || B == 0) return;
    const float *hs_in = hs, *cs_in = cs;

    ForRowBlocks(ctx, B, [&](int64_t r0, int64_t r1) {
      const int64_t b = r1 - r0;
      Scratch scratch(um.ScratchSize(b));
      for (int64_t t = 0; t < T; ++t) {
        const StepMask mt(mask, t, r0, T);
        const CSMap h_prev = t == 0 ? StateRows(h0, r0, b, U) : Rows(hs_in, t - 1, r0, b, T, U);
        Rows(h_prevs, t, r0, b, T, U) = h_prev;  // for the recurrent kernel's gradient
        const CSMap c_prev = t == 0 ? StateRows(c0, r0, b, U) : Rows(cs_in, t - 1, r0, b, T, U);
        SMap z = Rows(gates, t, r0, b, T, G);
        z = Rows(xp, t, r0, b, T, G);
        um.MulAdd(h_prev, z, scratch.data());
        auto s = z.array();
        s.leftCols(2 * U) = Sigmoid(s.leftCols(2 * U));
        s.middleCols(2 * U, U) = s.middleCols(2 * U, U).tanh();
        s.rightCols(U) = Sigmoid(s.rightCols(U));
        SMap c = Rows(cs, t, r0, b, T, U), h = Rows(hs, t, r0, b, T, U);
        c.array() = s.middleCols(U, U) * c_prev.array() + s.leftCols(U) * s.middleCols(2 * U, U);
        h.array() = s.rightCols(U) * c.array().tanh();
        CarryMasked(mt, c_prev, c);
        CarryMasked(mt, h_prev, h);
      }
    });
  }
};

class ZooLstmBackwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const char* op = "ZooLstmBackward";
    Dims d;
    OP_REQUIRES_OK(ctx, SeqDims(ctx->input(0), ctx->input(6), 4, op, &d));
    const int64_t T = d.T, B = d.B, U = d.U, G = d.G;
    const TensorShape state({B, U}), seq({B, T, U});
    OP_REQUIRES_OK(ctx, Expect(ctx->input(1), seq, op, "cs"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(2), state, op, "c0"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(3), seq, op, "d_hs"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(4), state, op, "d_h"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(5), state, op, "d_c"));
    const float* mask;
    OP_REQUIRES_OK(ctx, MaskOf(ctx->input(7), d, op, &mask));
    const float *gates = In(ctx, 0), *cs = In(ctx, 1), *c0 = In(ctx, 2), *d_hs = In(ctx, 3);
    float* dz_out = Out(ctx, 0, ctx->input(0).shape());
    float* gh_out = Out(ctx, 1, state);  // the running gradients, ending as dh0 and dc0
    float* gc_out = Out(ctx, 2, state);
    if (!ctx->status().ok()) return;
    std::copy_n(In(ctx, 4), B * U, gh_out);
    std::copy_n(In(ctx, 5), B * U, gc_out);
    if (T == 0 || B == 0) return;
    const PackedRight ut(ctx->input(6), true);

    ForRowBlocks(ctx, B, [&](int64_t r0, int64_t r1) {
      const int64_t b = r1 - r0;
      MapM gh(gh_out + r0 * U, b, U), gc(gc_out + r0 * U, b, U);
      RowMat dc(b, U), tc(b, U), kept_h(b, U), kept_c(b, U);
      Scratch scratch(ut.ScratchSize(b));
      for (int64_t t = T - 1; t >= 0; --t) {
        const StepMask mt(mask, t, r0, T);
        gh += Rows(d_hs, t, r0, b, T, U);
        auto s = Rows(gates, t, r0, b, T, G).array();
        auto i = s.leftCols(U), f = s.middleCols(U, U), g = s.middleCols(2 * U, U),
             o = s.rightCols(U);
        auto c_prev = (t == 0 ? StateRows(c0, r0, b, U) : Rows(cs, t - 1, r0, b, T, U)).array();
        tc.array() = Rows(cs, t, r0, b, T, U).array().tanh();
        auto ga = gh.array();
        auto ta = tc.array();
        auto dca = dc.array();
        dca = gc.array() + ga * o * (1.0f - ta * ta);
        SMap dz = Rows(dz_out, t, r0, b, T, G);
        auto dza = dz.array();
        dza.leftCols(U) = dca * g * i * (1.0f - i);
        dza.middleCols(U, U) = dca * c_prev * f * (1.0f - f);
        dza.middleCols(2 * U, U) = dca * i * (1.0f - g * g);
        dza.rightCols(U) = ga * ta * o * (1.0f - o);
        // a masked step passes gh and gc straight through
        ZeroMasked(mt, dz);
        CarryMasked(mt, gh, kept_h);
        CarryMasked(mt, gc, kept_c);
        gc.array() = dca * f;
        gh.setZero();
        ut.MulAdd(dz, gh, scratch.data());
        CarryMasked(mt, kept_h, gh);
        CarryMasked(mt, kept_c, gc);
      }
    });
  }
};

// -------------------------------------------------------------------------------- GRU

REGISTER_OP("ZooGruForward")
    .Input("xp: float").Input("h0: float").Input("u: float").Input("rb: float")
    .Input("mask: float")
    .Output("hs: float").Output("gates: float").Output("r_h: float").Output("h_prev: float")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(CheckShapes(c, {3, 2, 2, 1, kMask}, 2, 3));
      c->set_output(0, Seq(c, 0, 1));
      c->set_output(1, c->input(0));
      c->set_output(2, Seq(c, 0, 1));
      c->set_output(3, Seq(c, 0, 1));
      return OkStatus();
    });

REGISTER_OP("ZooGruBackward")
    .Input("gates: float").Input("r_h: float").Input("hs: float").Input("h0: float")
    .Input("d_hs: float").Input("d_h: float").Input("u: float").Input("mask: float")
    .Output("d_xp: float").Output("d_inner: float").Output("dh0: float")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(CheckShapes(c, {3, 3, 3, 2, 3, 2, 2, kMask}, 6, 3));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      c->set_output(2, c->input(5));
      return OkStatus();
    });

class ZooGruForwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const char* op = "ZooGruForward";
    Dims d;
    OP_REQUIRES_OK(ctx, SeqDims(ctx->input(0), ctx->input(2), 3, op, &d));
    const int64_t T = d.T, B = d.B, U = d.U, G = d.G;
    const TensorShape state({B, U}), seq({B, T, U});
    OP_REQUIRES_OK(ctx, Expect(ctx->input(1), state, op, "h0"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(3), TensorShape({U}), op, "rb"));
    const float* mask;
    OP_REQUIRES_OK(ctx, MaskOf(ctx->input(4), d, op, &mask));
    const float *xp = In(ctx, 0), *h0 = In(ctx, 1);
    const PackedRight um(ctx->input(2), false);
    Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>> rb(In(ctx, 3), U);
    float* hs = Out(ctx, 0, seq);
    float* gates = Out(ctx, 1, ctx->input(0).shape());
    float* r_h = Out(ctx, 2, seq);
    float* h_prevs = Out(ctx, 3, seq);
    if (!ctx->status().ok() || T == 0 || B == 0) return;
    const float* hs_in = hs;

    ForRowBlocks(ctx, B, [&](int64_t r0, int64_t r1) {
      const int64_t b = r1 - r0;
      RowMat inner(b, G);
      Scratch scratch(um.ScratchSize(b));
      for (int64_t t = 0; t < T; ++t) {
        const CSMap h_prev = t == 0 ? StateRows(h0, r0, b, U) : Rows(hs_in, t - 1, r0, b, T, U);
        Rows(h_prevs, t, r0, b, T, U) = h_prev;  // for the recurrent kernel's gradient
        inner.setZero();
        um.MulAdd(h_prev, inner, scratch.data());
        auto x = Rows(xp, t, r0, b, T, G).array();
        SMap s = Rows(gates, t, r0, b, T, G);
        auto sa = s.array();
        auto in = inner.array();
        sa.leftCols(2 * U) = Sigmoid(x.leftCols(2 * U) + in.leftCols(2 * U));
        SMap rh = Rows(r_h, t, r0, b, T, U);
        rh.array() = in.rightCols(U).rowwise() + rb;
        sa.rightCols(U) = (x.rightCols(U) + sa.middleCols(U, U) * rh.array()).tanh();
        auto z = sa.leftCols(U);
        auto hh = sa.rightCols(U);
        SMap h = Rows(hs, t, r0, b, T, U);
        h.array() = hh + z * (h_prev.array() - hh);
        CarryMasked(StepMask(mask, t, r0, T), h_prev, h);
      }
    });
  }
};

class ZooGruBackwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const char* op = "ZooGruBackward";
    Dims d;
    OP_REQUIRES_OK(ctx, SeqDims(ctx->input(0), ctx->input(6), 3, op, &d));
    const int64_t T = d.T, B = d.B, U = d.U, G = d.G;
    const TensorShape state({B, U}), seq({B, T, U});
    OP_REQUIRES_OK(ctx, Expect(ctx->input(1), seq, op, "r_h"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(2), seq, op, "hs"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(3), state, op, "h0"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(4), seq, op, "d_hs"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(5), state, op, "d_h"));
    const float* mask;
    OP_REQUIRES_OK(ctx, MaskOf(ctx->input(7), d, op, &mask));
    const float *gates = In(ctx, 0), *r_h = In(ctx, 1), *hs = In(ctx, 2), *h0 = In(ctx, 3),
                *d_hs = In(ctx, 4);
    float* d_xp = Out(ctx, 0, ctx->input(0).shape());
    float* d_inner = Out(ctx, 1, ctx->input(0).shape());
    float* gh_out = Out(ctx, 2, state);
    if (!ctx->status().ok()) return;
    std::copy_n(In(ctx, 5), B * U, gh_out);
    if (T == 0 || B == 0) return;
    const PackedRight ut(ctx->input(6), true);

    ForRowBlocks(ctx, B, [&](int64_t r0, int64_t r1) {
      const int64_t b = r1 - r0;
      MapM gh(gh_out + r0 * U, b, U);
      RowMat d_hpre(b, U), kept_h(b, U);
      Scratch scratch(ut.ScratchSize(b));
      for (int64_t t = T - 1; t >= 0; --t) {
        const StepMask mt(mask, t, r0, T);
        gh += Rows(d_hs, t, r0, b, T, U);
        auto s = Rows(gates, t, r0, b, T, G).array();
        auto z = s.leftCols(U), r = s.middleCols(U, U), hh = s.rightCols(U);
        auto h_prev = (t == 0 ? StateRows(h0, r0, b, U) : Rows(hs, t - 1, r0, b, T, U)).array();
        auto rh = Rows(r_h, t, r0, b, T, U).array();
        auto ga = gh.array();
        auto dh = d_hpre.array();
        dh = ga * (1.0f - z) * (1.0f - hh * hh);
        SMap dx = Rows(d_xp, t, r0, b, T, G), di = Rows(d_inner, t, r0, b, T, G);
        auto dxa = dx.array(), dia = di.array();
        dxa.leftCols(U) = ga * (h_prev - hh) * z * (1.0f - z);
        dxa.middleCols(U, U) = dh * rh * r * (1.0f - r);
        dxa.rightCols(U) = dh;
        dia.leftCols(2 * U) = dxa.leftCols(2 * U);
        dia.rightCols(U) = dh * r;
        ZeroMasked(mt, dx);
        ZeroMasked(mt, di);
        CarryMasked(mt, gh, kept_h);
        ga = ga * z;
        CarryMasked(mt, kept_h, gh);  // a masked step passes gh through
        ut.MulAdd(di, gh, scratch.data());
      }
    });
  }
};

// ------------------------------------------------------------------------------- tanh

REGISTER_OP("ZooTanhForward")
    .Input("xp: float").Input("h0: float").Input("u: float").Input("mask: float")
    .Output("hs: float").Output("h_prev: float")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(CheckShapes(c, {3, 2, 2, kMask}, 2, 1));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      return OkStatus();
    });

REGISTER_OP("ZooTanhBackward")
    .Input("hs: float").Input("d_hs: float").Input("d_h: float").Input("u: float")
    .Input("mask: float")
    .Output("da: float").Output("dh0: float")
    .SetShapeFn([](InferenceContext* c) {
      TF_RETURN_IF_ERROR(CheckShapes(c, {3, 3, 2, 2, kMask}, 3, 1));
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(2));
      return OkStatus();
    });

class ZooTanhForwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const char* op = "ZooTanhForward";
    Dims d;
    OP_REQUIRES_OK(ctx, SeqDims(ctx->input(0), ctx->input(2), 1, op, &d));
    const int64_t T = d.T, B = d.B, U = d.U;
    OP_REQUIRES_OK(ctx, Expect(ctx->input(1), TensorShape({B, U}), op, "h0"));
    const float* mask;
    OP_REQUIRES_OK(ctx, MaskOf(ctx->input(3), d, op, &mask));
    const float *xp = In(ctx, 0), *h0 = In(ctx, 1);
    const PackedRight um(ctx->input(2), false);
    float* hs = Out(ctx, 0, ctx->input(0).shape());
    float* h_prevs = Out(ctx, 1, ctx->input(0).shape());
    if (!ctx->status().ok() || T == 0 || B == 0) return;
    const float* hs_in = hs;

    ForRowBlocks(ctx, B, [&](int64_t r0, int64_t r1) {
      const int64_t b = r1 - r0;
      Scratch scratch(um.ScratchSize(b));
      for (int64_t t = 0; t < T; ++t) {
        const CSMap h_prev = t == 0 ? StateRows(h0, r0, b, U) : Rows(hs_in, t - 1, r0, b, T, U);
        Rows(h_prevs, t, r0, b, T, U) = h_prev;  // for the recurrent kernel's gradient
        SMap h = Rows(hs, t, r0, b, T, U);
        h = Rows(xp, t, r0, b, T, U);
        um.MulAdd(h_prev, h, scratch.data());
        h.array() = h.array().tanh();
        CarryMasked(StepMask(mask, t, r0, T), h_prev, h);
      }
    });
  }
};

class ZooTanhBackwardOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const char* op = "ZooTanhBackward";
    Dims d;
    OP_REQUIRES_OK(ctx, SeqDims(ctx->input(0), ctx->input(3), 1, op, &d));
    const int64_t T = d.T, B = d.B, U = d.U;
    OP_REQUIRES_OK(ctx, Expect(ctx->input(1), ctx->input(0).shape(), op, "d_hs"));
    OP_REQUIRES_OK(ctx, Expect(ctx->input(2), TensorShape({B, U}), op, "d_h"));
    const float* mask;
    OP_REQUIRES_OK(ctx, MaskOf(ctx->input(4), d, op, &mask));
    const float *hs = In(ctx, 0), *d_hs = In(ctx, 1);
    float* da = Out(ctx, 0, ctx->input(0).shape());
    float* gh_out = Out(ctx, 1, TensorShape({B, U}));
    if (!ctx->status().ok()) return;
    std::copy_n(In(ctx, 2), B * U, gh_out);
    if (T == 0 || B == 0) return;
    const PackedRight ut(ctx->input(3), true);

    ForRowBlocks(ctx, B, [&](int64_t r0, int64_t r1) {
      const int64_t b = r1 - r0;
      MapM gh(gh_out + r0 * U, b, U);
      RowMat kept_h(b, U);
      Scratch scratch(ut.ScratchSize(b));
      for (int64_t t = T - 1; t >= 0; --t) {
        const StepMask mt(mask, t, r0, T);
        gh += Rows(d_hs, t, r0, b, T, U);
        auto h = Rows(hs, t, r0, b, T, U).array();
        SMap a = Rows(da, t, r0, b, T, U);
        a.array() = gh.array() * (1.0f - h * h);
        ZeroMasked(mt, a);
        CarryMasked(mt, gh, kept_h);
        gh.setZero();
        ut.MulAdd(a, gh, scratch.data());
        CarryMasked(mt, kept_h, gh);
      }
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("ZooLstmForward").Device(DEVICE_CPU), ZooLstmForwardOp);
REGISTER_KERNEL_BUILDER(Name("ZooLstmBackward").Device(DEVICE_CPU), ZooLstmBackwardOp);
REGISTER_KERNEL_BUILDER(Name("ZooGruForward").Device(DEVICE_CPU), ZooGruForwardOp);
REGISTER_KERNEL_BUILDER(Name("ZooGruBackward").Device(DEVICE_CPU), ZooGruBackwardOp);
REGISTER_KERNEL_BUILDER(Name("ZooTanhForward").Device(DEVICE_CPU), ZooTanhForwardOp);
REGISTER_KERNEL_BUILDER(Name("ZooTanhBackward").Device(DEVICE_CPU), ZooTanhBackwardOp);
