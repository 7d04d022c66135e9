"""City AI Factory: the library behind the scenario DAGs.

One subpackage per concern (config, storage, ingestion, security, governance, ...). Modules here
import only light dependencies at top level so that DAG parsing stays fast; heavy libraries are
imported inside the functions that need them.
"""

import os

# The same arithmetic on every Intel CPU. MKL, oneDNN and ATen pick their kernels by the CPU they
# run on (AVX-512, AMX, ...), and another kernel sums in another order: the same seed and data gave
# different networks on different machines. Pinned to the AVX2 code path, which x86-64 CPUs of the
# last decade all have, before torch's first use in any process that imports this library (a
# deployment may set them otherwise). Measured: no slower (make evaluate, traffic: 846 s vs 857 s).
# MKL honours its AVX2 branch on Intel CPUs only (on others it keeps its own, as its guide says):
# an AMD machine gives numbers of its own, 0.1 % apart on traffic (216.1 on an AMD EPYC, 215.8 on
# an Intel Xeon, make evaluate).
CPU_PINS = {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
for _name, _value in CPU_PINS.items():
    os.environ.setdefault(_name, _value)
