"""Print an ARM64 /proc/cpuinfo for the CPU qemu emulates; run *under* qemu-aarch64 by run.sh.

qemu 7.2's user mode passes the host's x86 /proc/cpuinfo through to the
guest, and LiteRT's CPU detection (XNNPACK's cpuinfo) then crashes in
``allocate_tensors()``. With ``-L ROOT`` qemu opens ``ROOT/proc/cpuinfo``
instead when it exists, so run.sh writes this file's output there.

The "Features" line is read from the emulated CPU itself (AT_HWCAP and
AT_HWCAP2 of the auxiliary vector, decoded as Linux does); the MIDR fields
(implementer, variant, part, revision) come from the table below, which
holds the values qemu gives its CPU models. Exits non-zero unless the
interpreter is aarch64 and the CPU model is one in the table.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

#: qemu -cpu name -> (implementer, variant, part, revision) from its MIDR_EL1.
MIDR = {
    "cortex-a53": (0x41, 0x0, 0xD03, 4),   # Raspberry Pi 3 / Zero 2 W (BCM2837 / RP3A0)
    "cortex-a72": (0x41, 0x0, 0xD08, 3),   # Raspberry Pi 4 / 400 / CM4 (BCM2711)
    "cortex-a76": (0x41, 0x4, 0xD0B, 1),   # Raspberry Pi 5 / CM5 (BCM2712)
    "neoverse-n1": (0x41, 0x4, 0xD0C, 1),  # Arm servers (Graviton2, Ampere Altra)
}

#: Linux's hwcap_str order (arch/arm64/kernel/cpuinfo.c): HWCAP bits 0-31, then HWCAP2 bits.
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
         "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
          "svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme").split()
AT_HWCAP, AT_HWCAP2 = 16, 26


def features() -> str:
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    hw, hw2 = libc.getauxval(AT_HWCAP), libc.getauxval(AT_HWCAP2)
    names = [n for i, n in enumerate(HWCAP) if hw >> i & 1]
    names += [n for i, n in enumerate(HWCAP2) if hw2 >> i & 1]
    return " ".join(names)


def cpuinfo(cpu: str, count: int) -> str:
    impl, variant, part, rev = MIDR[cpu]
    feats = features()
    block = (f"BogoMIPS\t: 108.00\nFeatures\t: {feats}\nCPU implementer\t: 0x{impl:02x}\n"
             f"CPU architecture: 8\nCPU variant\t: 0x{variant:x}\nCPU part\t: 0x{part:03x}\nCPU revision\t: {rev}\n\n")
    return "".join(f"processor\t: {i}\n{block}" for i in range(count))


def main() -> int:
    if platform.machine() != "aarch64":
        print(f"cpuinfo.py: expected to run on aarch64, got {platform.machine()}", file=sys.stderr)
        return 1
    cpu = os.environ.get("QEMU_CPU", "")
    if cpu not in MIDR:
        print(f"cpuinfo.py: set QEMU_CPU to one of {', '.join(MIDR)} (got {cpu!r}; qemu's default 'max' "
              "enables SME, with which XNNPACK computes wrong results under qemu 7.2)", file=sys.stderr)
        return 1
    sys.stdout.write(cpuinfo(cpu, max(1, len(os.sched_getaffinity(0)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
