"""Speed defaults (issue 16 + the shared-CPU part of issue 15): allocator, bf16 detection, thread settings,
the --compile decision. Fast: no network is trained here (the compiled-run test is in test_compile.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from skinonnx.cpus import bf16_hardware, cpu_flags, passive_openmp_wait
from skinonnx.errors import SkinOnnxError
from skinonnx.training import compile as compile_mod
from skinonnx.training.allocator import chosen_elsewhere, keep_freed_memory
from skinonnx.training.device import amp_dtype, autocast
from tests.waits import WAIT_S

from ..conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
SKYLAKE = "flags\t\t: sse2 avx2 fma avx512f avx512bw avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


def test_cpu_flags_are_parsed_from_cpuinfo_text() -> None:
    assert {"avx512_bf16", "avx2", "fma"} <= cpu_flags(ZEN4)
    assert "asimd" in cpu_flags(ARM)
    assert cpu_flags("no flags line here\n") == frozenset()


@pytest.mark.parametrize(("cpuinfo", "unit"), [(SAPPHIRE, "amx_bf16"), (ZEN4, "avx512_bf16"), (SKYLAKE, None),
                                               (ARM, None), ("", None)])
def test_bf16_hardware_is_named_only_where_the_flags_show_it(cpuinfo: str, unit: str | None) -> None:
    assert bf16_hardware(cpu_flags(cpuinfo)) == unit


def test_bf16_autocast_only_on_cpus_with_a_bf16_unit() -> None:
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, True, cpu_flags(SKYLAKE)) is None  # emulated bf16 is 11-26x slower: never
    assert amp_dtype(cpu, True, cpu_flags(ARM)) is None
    assert amp_dtype(cpu, False, cpu_flags(SAPPHIRE)) is None  # --no-amp
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # oneDNN agrees that this build can use the unit
        assert amp_dtype(cpu, True, cpu_flags(SAPPHIRE)) == torch.bfloat16
    assert amp_dtype(torch.device("cuda"), True, frozenset()) == torch.float16


def test_the_autocast_type_reaches_the_convolutions() -> None:
    conv, x = torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8)
    with autocast(torch.device("cpu"), True, torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), True, None):  # CPU without a bf16 unit: plain fp32
        assert conv(x).dtype == torch.float32


def test_openmp_wait_policy_default_is_passive_and_a_users_choice_wins() -> None:
    env: dict[str, str] = {}
    assert passive_openmp_wait(env) == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert passive_openmp_wait(mine) == "ACTIVE"


def test_onnx_runtime_cpu_sessions_do_not_spin() -> None:
    from skinonnx.deploy.runtime import session_options

    opts = session_options(3)
    assert opts.intra_op_num_threads == 3
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(spinning=True).get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_the_allocator_module_loads_without_torch() -> None:
    """The CLI calls it before torch allocates anything: importing it must not load torch."""
    code = "import sys, skinonnx.training.allocator; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_allocator_switch_and_a_users_own_choice_are_respected() -> None:
    assert "SKINONNX_MALLOC=system" in keep_freed_memory({"SKINONNX_MALLOC": "system"})
    assert keep_freed_memory({"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}) == "tcmalloc (LD_PRELOAD)"
    tunables = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}
    assert chosen_elsewhere(tunables) == "glibc malloc with the user's GLIBC_TUNABLES"


# A 64 MB buffer is above glibc's largest dynamic mmap threshold (32 MB): by default it is a fresh
# mmap on every allocation, returned to the kernel on free and faulted in (zeroed) again next time.
# With the kept memory, the freed buffer stays in the process (RSS stays up) for the next allocation.
FREE_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from skinonnx.training.allocator import keep_freed_memory
    note = keep_freed_memory({} if sys.argv[1] == "keep" else {"SKINONNX_MALLOC": "system"})
    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    before = rss_mb()
    a = np.empty(16 << 20, np.float32)
    a.fill(1.0)
    del a
    print(json.dumps({"kept_mb": rss_mb() - before, "note": note}))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_freed_large_buffers_stay_in_the_process() -> None:
    def kept_mb(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-c", FREE_PROBE, mode], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=WAIT_S)
        return json.loads(out.stdout.strip().splitlines()[-1])

    default, kept = kept_mb("system"), kept_mb("keep")
    if "keeping freed memory" not in kept["note"]:
        pytest.skip(f"not glibc here: {kept['note']}")
    assert default["kept_mb"] < 16  # unmapped on free: the next step faults it in again
    assert kept["kept_mb"] > 48  # the 64 MB stay for reuse


def test_compile_decision() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_mod.decide("off", cpu, 10**6, 16, 224) == (False, "off (--compile off)")
    with pytest.raises(SkinOnnxError, match="unknown --compile"):
        compile_mod.decide("maybe", cpu, 1, 16, 224)
    if compile_mod.compile_unavailable(cpu) is not None:
        pytest.skip(compile_mod.compile_unavailable(cpu))
    cost = compile_mod.COMPILE_COSTS["cpu"]
    need = cost.break_even_steps(16, 224)
    assert compile_mod.decide("auto", cpu, need, 16, 224)[0]
    short, why = compile_mod.decide("auto", cpu, need - 1, 16, 224)
    assert not short and f"< {need}" in why
    # smaller steps save less per step: the same compile needs more of them
    assert cost.break_even_steps(16, 64) > 10 * need
    assert compile_mod.decide("on", cpu, 1, 2, 32) == (True, "on (--compile on)")
    if compile_mod.COMPILE_COSTS["cuda"] is None:
        assert not compile_mod.decide("auto", cuda, 10**9, 256, 224)[0]


def test_compile_on_without_a_compiler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_mod.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(SkinOnnxError, match="needs a C\\+\\+ compiler"):
        compile_mod.decide("on", torch.device("cpu"), 1, 2, 32)
    assert compile_mod.decide("auto", torch.device("cpu"), 10**6, 16, 224)[0] is False


def test_a_failing_compile_is_an_error_with_on_and_eager_training_with_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, *args, **kwargs):
        raise RuntimeError("C++ compile error: cannot find Python.h\nmore detail")

    monkeypatch.setattr(compile_mod.CompiledSteps, "warm_up", broken)
    model, said = torch.nn.Linear(2, 2), []
    kwargs = {"batch_size": 2, "image_size": 32, "device": torch.device("cpu"), "channels_last": False,
              "dtype": None, "echo": said.append}
    assert compile_mod.compiled_for_training(model, "auto", **kwargs) is model
    assert said == ["torch.compile failed (C++ compile error: cannot find Python.h); training without it"]
    with pytest.raises(SkinOnnxError, match=r"--compile on: torch.compile failed .*--compile off"):
        compile_mod.compiled_for_training(model, "on", **kwargs)


def test_threads_option_is_validated_and_reported(trained) -> None:
    bad = run_cli("predict", trained.data / "test", "--onnx", trained.onnx, "--threads", "0", expect=2)
    assert "--threads" in bad.output
    out = trained.workdir / "threads.csv"
    result = run_cli("predict", trained.data / "test", "--onnx", trained.onnx, "--threads", "1", "-o", out,
                     "--quiet")
    assert "(1 intra-op threads, spinning off)" in result.output
    assert run_cli("train", "--threads", "0", expect=2).exit_code == 2
