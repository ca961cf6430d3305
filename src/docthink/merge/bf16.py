"""`base + alpha * ((tuned - base) + delta)` over bf16 values in one fused loop, compiled by LLVM.

The numpy kernel (kernel.py) makes ten passes over every block: two casts and shifts to decode,
three float ops, four integer ops and a strided copy to round back to bf16; 3.2-3.7 ns per value
on one thread here. This loop does the same float32 operations, with the same operands in the same
order, value by value, and rounds the same way (to nearest even on the float32 bits), so its
results are bit-identical (tests/test_merge.py checks every bf16 pattern against the numpy
kernel): 0.6 ns per value.

The loop is written as LLVM IR with llvmlite and compiled for this CPU the first time a process
needs it: importing llvmlite and compiling took 0.14 s here. The same loop through numba took
0.5 ns per value but 0.9-1.0 s to start (importing numba, then loading every registry it has,
scipy's BLAS included, before its first call, even from its on-disk cache): half the merge of a
0.6B model.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

import numpy as np

# a variant for each set of inputs read besides `base`: (tuned, delta)
_VARIANTS = {(True, False): "lerp_tuned", (False, True): "lerp_delta", (True, True): "lerp_both"}


def lerp(base: np.ndarray, tuned: np.ndarray | None, delta: np.ndarray | None, alpha: float,
         out: np.ndarray) -> None:  # fmt: skip
    """`out[i]` (bf16 bits, uint16) for each `base[i]` (bf16 bits): `tuned` (bf16 bits) and
    `delta` (float32) may each be absent, not both. Releases the GIL."""
    arrays = [("base", base, np.uint16), ("tuned", tuned, np.uint16),
              ("delta", delta, np.float32), ("out", out, np.uint16)]  # fmt: skip
    for name, array, dtype in arrays:
        if array is None:
            continue
        if array.dtype != dtype or array.ndim != 1 or not array.flags.c_contiguous:
            raise TypeError(f"{name}: want a contiguous 1-d {dtype.__name__} array, got "
                            f"{array.dtype} {array.shape}")  # fmt: skip
        if array.size != base.size:
            raise ValueError(f"{name}: {array.size} values for {base.size} in base")
    if not out.flags.writeable:
        raise ValueError("out: read-only")
    variant = _VARIANTS.get((tuned is not None, delta is not None))
    if variant is None:
        raise ValueError("lerp needs tuned values, a delta, or both")
    sources = [a.ctypes.data for a in (base, tuned, delta) if a is not None]
    _loops()[variant](*sources, alpha, out.ctypes.data, base.size)


_lock = threading.Lock()
_compiled: tuple[object, dict[str, Callable[..., None]]] | None = None  # (the JIT engine, which
# owns the machine code and so lives as long as the process, and the loops by name)


def _loops() -> dict[str, Callable[..., None]]:
    """The three variants, compiled once per process (the first caller compiles, others wait)."""
    global _compiled
    with _lock:
        if _compiled is None:
            _compiled = _compile()
        return _compiled[1]


def _compile() -> tuple[object, dict[str, Callable[..., None]]]:
    """The variants compiled for the host CPU, with the engine that holds their code."""
    import llvmlite.binding as llvm  # type: ignore[import-untyped]

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    module = llvm.parse_assembly(str(_module()))
    module.verify()
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3
    )
    builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
    builder.getModulePassManager().run(module, builder)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    functions: dict[str, Callable[..., None]] = {}
    for (has_tuned, has_delta), name in _VARIANTS.items():
        pointers = [ctypes.c_void_p] * (1 + has_tuned + has_delta)
        signature = ctypes.CFUNCTYPE(None, *pointers, ctypes.c_float, ctypes.c_void_p,
                                     ctypes.c_int64)  # fmt: skip
        functions[name] = signature(engine.get_function_address(name))  # CFUNCTYPE drops the GIL
    return engine, functions


def _module():  # type: ignore[no-untyped-def]
    """The IR: one loop per variant."""
    from llvmlite import ir  # type: ignore[import-untyped]

    module = ir.Module("docthink_bf16")
    for (has_tuned, has_delta), name in _VARIANTS.items():
        _define_loop(ir, module, name, has_tuned, has_delta)
    return module


def _define_loop(ir, module, name: str, has_tuned: bool, has_delta: bool) -> None:  # type: ignore[no-untyped-def]
    """`name(base, [tuned], [delta], alpha, out, n)`, operands in the numpy kernel's order."""
    i16, i32, i64, f32 = ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
    pointers = [i16.as_pointer()] * (1 + has_tuned) + [f32.as_pointer()] * has_delta
    signature = ir.FunctionType(ir.VoidType(), [*pointers, f32, i16.as_pointer(), i64])
    fn = ir.Function(module, signature, name)
    *sources, alpha, out, n = fn.args
    entry, loop, done = (fn.append_basic_block(block) for block in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_unsigned("==", n, i64(0)), done, loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(i64(0), entry)

    def widen(bits16):  # type: ignore[no-untyped-def]
        return b.bitcast(b.shl(b.zext(bits16, i32), i32(16)), f32)

    loaded = [b.load(b.gep(p, [i], inbounds=True)) for p in sources]
    base = widen(loaded[0])
    if has_tuned:
        d = b.fsub(widen(loaded[1]), base)  # np.subtract(tuned, base)
        if has_delta:
            d = b.fadd(d, loaded[2])  # np.add(d, delta)
    else:
        d = loaded[1]
    r = b.bitcast(b.fadd(b.fmul(d, alpha), base), i32)  # np.multiply(d, alpha); np.add(r, base)
    odd = b.and_(b.lshr(r, i32(16)), i32(1))  # round to nearest even on the float32 bits
    rounded = b.lshr(b.add(b.add(r, odd), i32(0x7FFF)), i32(16))
    b.store(b.trunc(rounded, i16), b.gep(out, [i], inbounds=True))
    following = b.add(i, i64(1), flags=["nuw"])
    i.add_incoming(following, loop)
    b.cbranch(b.icmp_unsigned("==", following, n), done, loop)
    b.position_at_end(done)
    b.ret_void()
