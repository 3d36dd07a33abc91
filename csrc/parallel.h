// When the CPU kernels fork an OpenMP team. A parallel region costs a fork and a barrier: microseconds on a
// quiet machine, but on a busy one every thread of the team waits at the barrier for a core (with active
// waiting it spins there), which costs more than the loops below this size take on one core. Each kernel
// passes its element count to an `if` clause, so small work runs on the calling thread.
#pragma once
#include <cstdint>

namespace dynadiff {

// Elements (grid points, lattice cells, complex multiply-adds) below which a kernel stays on one thread.
constexpr int64_t kMinParallelWork = int64_t(1) << 16;

}  // namespace dynadiff
