#pragma once
/// \file
/// Umbrella header: everything of tpx that runs on any machine (core, shard math, collectives,
/// styles, layers and the host backend).

#include "tpx/backend/host/backend.hpp"
#include "tpx/backend/host/communicator.hpp"
#include "tpx/backend/host/gemm.hpp"
#include "tpx/comm/collectives.hpp"
#include "tpx/comm/communicator.hpp"
#include "tpx/comm/conjugate.hpp"
#include "tpx/core/dtype.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/gemm/engine.hpp"
#include "tpx/layer/activation.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/layer/chain.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/shard/split.hpp"
#include "tpx/shard/partition.hpp"
#include "tpx/shard/gqa.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/concept.hpp"
#include "tpx/style/layout.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/version.hpp"
