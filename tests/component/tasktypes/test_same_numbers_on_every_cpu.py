"""A model is the same bits on every Intel x86-64 machine: the library pins MKL, oneDNN and ATen
to their AVX2 kernels (``cityfactory.CPU_PINS``), so a fit here equals one on a CPU without AVX-512
(MKL keeps its own branch on other vendors' CPUs: there the pins bind oneDNN and ATen only).

Each fit runs in its own interpreter, because the kernels are chosen once, at their first use."""

from __future__ import annotations

import os
import subprocess
import sys

from cityfactory import CPU_PINS
from support import REPO

FIT = """
import hashlib, cityfactory, numpy as np, torch
from cityfactory.tasktypes.epochs import seed_everything
from cityfactory.tasktypes.forecast.fitting import fit_network
from cityfactory.tasktypes.forecast.network import ResidualMLP, scaling

rng = np.random.default_rng(0)
x = (rng.normal(size=(3000, 40)) * 100 + 500).astype(np.float32)
y = x[:, 0] + 0.1 * x[:, 1:5].sum(axis=1) + rng.normal(size=3000) * 10
seed_everything(1)
mlp = fit_network(ResidualMLP(40, [128, 128], 0, 1000.0, *scaling(x)), x[:2500], y[:2500], x[2500:], y[2500:],
                  epochs=2, patience=2, batch_size=256, learning_rate=0.002, weight_decay=1e-4, seed=1, scale=1000.0)
conv = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2))
optimiser = torch.optim.AdamW(conv.parameters(), 1e-3)
images = torch.from_numpy(rng.normal(size=(8, 1, 48, 48)).astype(np.float32))
for _ in range(2):
    optimiser.zero_grad()
    conv(images).pow(2).mean().backward()
    optimiser.step()
with torch.no_grad():
    out = [mlp.model(torch.from_numpy(x[2500:])).numpy(), conv(images).numpy()]
print(hashlib.sha256(b"".join(a.tobytes() for a in out)).hexdigest())
"""
AVX2_MACHINE = {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
NATIVE_AVX512 = {"MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL", "ATEN_CPU_CAPABILITY": "avx512"}


def _fit(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in CPU_PINS}
    done = subprocess.run([sys.executable, "-c", FIT], env={**clean, **env, "PYTHONPATH": str(REPO / "plugins")},
                          capture_output=True, text=True, check=True)
    return done.stdout.split()[-1]


def _has_avx512() -> bool:
    with open("/proc/cpuinfo") as cpuinfo:
        return "avx512f" in cpuinfo.read()


def test_a_fit_here_is_the_fit_of_a_machine_with_avx2_only():
    here = _fit({})  # the library's pins
    assert here == _fit(AVX2_MACHINE)
    if _has_avx512():  # the pins are what makes it so: this CPU's own kernels give other numbers
        assert _fit(NATIVE_AVX512) != here
