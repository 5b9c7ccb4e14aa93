#!/usr/bin/env bash
# Run the device test suite (pytest -m arm64) on aarch64 under qemu user-mode emulation.
#
#   tests/arm64/run.sh [pytest args...]        (default args: tests/)
#
# On a plain x86-64 Debian host (no binfmt_misc, no chroot) this
#   1. installs qemu-user-static with apt if qemu-aarch64-static is missing;
#   2. builds a Debian bookworm arm64 root (libc6, python3.11 and its libraries) with
#      `apt-get download` into its own apt state (the host's is untouched) and `dpkg -x`;
#   3. installs the aarch64 wheels of the project's device extra (+ pytest), pinned to the
#      host's versions, with the host's pip (--platform ... --target), and the project
#      itself as a wheel built from the working tree;
#   4. writes x86 reference outputs of the shipped bundle natively (arm64_parity.py);
#   5. runs `qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11 -m pytest -m arm64 ...`
#      (QEMU_CPU=cortex-a76, the Raspberry Pi 5's core), then the parity test again on
#      each CPU in FER_EDGE_ARM64_EXTRA_CPUS (default cortex-a72, the Pi 4's core).
# Everything is cached under .cache/arm64/ (git-ignored); a rerun only rebuilds the project
# wheel and the reference. Exits non-zero on any failure and prints how long it took.
#
# Environment:
#   FER_EDGE_ARM64_CACHE       cache folder (default: <repo>/.cache/arm64)
#   FER_EDGE_ARM64_PYTHON      host Python with the project + ai-edge-litert installed
#                              (default: <repo>/.venv/bin/python, else python3)
#   QEMU_CPU                   emulated CPU for the main run (default cortex-a76; see cpuinfo.py)
#   FER_EDGE_ARM64_EXTRA_CPUS  CPUs to rerun the parity test on (default "cortex-a72"; "" for none)
#   FER_EDGE_ARM64_REFRESH=1   rebuild the arm64 root and the wheel folder even if cached
#   FER_EDGE_ARM64_SOURCES     an apt sources.list to use instead of the one derived from the host's
#   FER_EDGE_ARM64_EXTRA_REQS  extra requirements for the emulated side (space-separated)
#   FER_EDGE_ARM64_BUNDLE      compare this bundle (folder or .tar.gz) instead of the shipped one
set -euo pipefail

T0=$(date +%s%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${FER_EDGE_ARM64_CACHE:-$REPO/.cache/arm64}
if [ -n "${FER_EDGE_ARM64_PYTHON:-}" ]; then HOST_PY=$FER_EDGE_ARM64_PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then HOST_PY=$REPO/.venv/bin/python
else HOST_PY=$(command -v python3); fi
MAIN_CPU=${QEMU_CPU:-cortex-a76}
EXTRA_CPUS=${FER_EDGE_ARM64_EXTRA_CPUS-cortex-a72}
SUITE=bookworm
# The arm64 root: python3.11 pulls in libc6 and the stdlib's libraries; the wheels need libstdc++/libgcc.
ROOT_PACKAGES=(python3.11 libstdc++6 libgcc-s1)
# Resolved as dependencies but never run in the root (readline-common wants dpkg | install-info).
ROOT_EXCLUDE=(dpkg tar)
PLATFORMS=(--platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64
           --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64)
PIP_TARGET_OPTS=("${PLATFORMS[@]}" --only-binary=:all: --python-version 3.11 --implementation cp)

elapsed() { echo $(( ($(date +%s%N) - T0) / 1000000 )) | awk '{printf "%.1f", $1 / 1000}'; }
log() { printf '[arm64 %6ss] %s\n' "$(elapsed)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }
STATUS=FAILED
trap 'log "arm64 stage $STATUS in $(elapsed) s"' EXIT

mkdir -p "$CACHE/logs"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE"

# quiet NAME CMD...: run CMD with its output in logs/NAME.log; show the log's tail if it fails.
quiet() {
    local name=$1; shift
    if ! "$@" >"$CACHE/logs/$name.log" 2>&1; then
        tail -n 40 "$CACHE/logs/$name.log" >&2
        die "$name failed (full log: $CACHE/logs/$name.log)"
    fi
}
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

# --------------------------------------------------------------------------- 1. qemu
QEMU=$(command -v qemu-aarch64-static || true)
if [ -z "$QEMU" ]; then
    log "installing qemu-user-static with apt"
    apt_install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-user-static; }
    if ! apt_install >"$CACHE/logs/qemu-install.log" 2>&1; then
        quiet apt-update-host "${SUDO[@]}" apt-get update -q
        quiet qemu-install apt_install
    fi
    QEMU=$(command -v qemu-aarch64-static) || die "qemu-aarch64-static still missing after installing qemu-user-static"
fi
log "$("$QEMU" --version | head -n 1)"

# --------------------------------------------------------------------------- 2. arm64 root
ROOT=$CACHE/root
APTDIR=$CACHE/apt
APT_OPTS=(-o APT::Architecture=arm64 -o APT::Architectures=arm64
          -o Dir::Etc::SourceList="$APTDIR/sources.list" -o Dir::Etc::SourceParts="$APTDIR/sources.list.d"
          -o Dir::Etc::Preferences="$APTDIR/preferences" -o Dir::Etc::PreferencesParts="$APTDIR/preferences.d"
          -o Dir::State="$APTDIR/state" -o Dir::State::Lists="$APTDIR/lists" -o Dir::State::status="$APTDIR/status"
          -o Dir::Cache="$APTDIR/cache" -o Debug::NoLocking=1 -o Acquire::Languages=none -o Acquire::Retries=3)
[ "$(id -u)" -ne 0 ] || APT_OPTS+=(-o APT::Sandbox::User=root)

host_sources() {
    # The host's own Debian mirrors (whatever its sources.list* say), re-pointed at bookworm arm64 main.
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot tell the host's Debian release from /etc/os-release; set FER_EDGE_ARM64_SOURCES"
    local signed=""
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && signed=" signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
    apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' |
        awk -v c="$codename" -v s="$SUITE" -v opt="$signed" '
            $3 == "main" && ($2 == c || $2 == c "-updates" || $2 == c "-security") && !seen[$1 " " $2]++ {
                suite = s substr($2, length(c) + 1)
                print "deb [arch=arm64" opt "] " $1 " " suite " main"
            }'
}

build_root() {
    rm -rf "$APTDIR" "$ROOT.tmp"
    mkdir -p "$APTDIR"/{lists/partial,cache/archives/partial,state,sources.list.d,preferences.d,debs} "$ROOT.tmp"
    : >"$APTDIR/status"
    if [ -n "${FER_EDGE_ARM64_SOURCES:-}" ]; then cp "$FER_EDGE_ARM64_SOURCES" "$APTDIR/sources.list"
    else host_sources >"$APTDIR/sources.list"; fi
    grep -q '^deb ' "$APTDIR/sources.list" || die "found no Debian mirror in the host's apt sources; set FER_EDGE_ARM64_SOURCES"
    sed 's/^/    /' "$APTDIR/sources.list"
    # A mirror caught mid-sync fails one index ("File has unexpected size"): retry, then go on with
    # what was fetched (the resolver below fails loudly if python3.11 is not among it).
    local try
    for try in 1 2 3; do
        apt-get "${APT_OPTS[@]}" update >"$CACHE/logs/apt-update.log" 2>&1 && break
        if [ "$try" = 3 ]; then
            grep -E '^(E|W):' "$CACHE/logs/apt-update.log" >&2 || true
            log "WARNING: apt-get update failed 3 times; continuing with the indexes it got"
        else sleep 5; fi
    done
    # Resolve the closure with apt's own solver against an empty status file (nothing installed).
    quiet apt-resolve apt-get "${APT_OPTS[@]}" -s install --no-install-recommends "${ROOT_PACKAGES[@]}"
    mapfile -t PKGS < <(awk '/^Inst /{ v = $3; sub(/^\(/, "", v); print $2 "=" v }' "$CACHE/logs/apt-resolve.log" |
                        grep -v -E "^($(IFS='|'; echo "${ROOT_EXCLUDE[*]}"))=")
    [ "${#PKGS[@]}" -gt 10 ] || die "apt resolved only ${#PKGS[@]} packages (see $CACHE/logs/apt-resolve.log)"
    (cd "$APTDIR/debs" && quiet apt-download apt-get "${APT_OPTS[@]}" download "${PKGS[@]}")
    local deb
    for deb in "$APTDIR"/debs/*.deb; do dpkg -x "$deb" "$ROOT.tmp"; done
    # Keep the guest off the host's x86 files where qemu -L would fall back to them.
    mkdir -p "$ROOT.tmp"/proc "$ROOT.tmp"/usr/lib/python3/dist-packages "$ROOT.tmp"/usr/local/lib/python3.11/dist-packages
    : >"$ROOT.tmp/etc/ld.so.cache"  # empty: glibc ignores it and uses its default multiarch paths
    # Byte-compile the stdlib natively (same 3.11 bytecode) so the emulated start-up does not.
    if "$HOST_PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        "$HOST_PY" -m compileall -q -j 0 "$ROOT.tmp/usr/lib/python3.11" >/dev/null 2>&1 || true
    fi
    printf '%s\n' "${PKGS[@]}" >"$ROOT.tmp/.fer-edge-root"
    rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
    log "arm64 root: ${#PKGS[@]} packages, $(du -sh "$APTDIR/debs" | cut -f1) of .debs, $(du -sh "$ROOT" | cut -f1) unpacked"
    rm -rf "$APTDIR/debs" "$APTDIR/cache"
}

if [ -f "$ROOT/.fer-edge-root" ] && [ -z "${FER_EDGE_ARM64_REFRESH:-}" ]; then
    log "arm64 root: cached ($(wc -l <"$ROOT/.fer-edge-root") packages)"
else
    log "building the bookworm arm64 root with apt-get download + dpkg -x"
    build_root
fi

# --------------------------------------------------------------------------- 3. wheels
log "building the project wheel from the working tree"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fer-edge-arm64.XXXXXX")
trap 'rm -rf "$WORK"; log "arm64 stage $STATUS in $(elapsed) s"' EXIT
mkdir -p "$WORK/src" "$WORK/wheel"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    # What git would ship: tracked files plus new files that are not ignored.
    git -C "$REPO" ls-files -z -co --exclude-standard | (cd "$REPO" && xargs -0 tar -cf - --ignore-failed-read) |
        tar -xf - -C "$WORK/src"
else
    tar -cf - -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./.cache --exclude=./build \
        --exclude=./dist --exclude=./runs . | tar -xf - -C "$WORK/src"
fi
# A package-dir folder with no files yet (not in git) would stop setuptools: warn and create it empty.
"$HOST_PY" - "$WORK/src" <<'EOF'
import sys, tomllib
from pathlib import Path
src = Path(sys.argv[1])
cfg = tomllib.loads((src / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
for folder in cfg.get("package-dir", {}).values():
    if not (src / folder).is_dir():
        print(f"[arm64] WARNING: package folder '{folder}/' has no files in the checkout; building with it empty")
        (src / folder).mkdir(parents=True)
EOF
quiet project-wheel "$HOST_PY" -m pip wheel -q --no-deps -w "$WORK/wheel" "$WORK/src"
WHEEL=$(ls "$WORK"/wheel/*.whl)

# Requirements: the wheel's own (base + device extra) plus pytest; pinned to the host's versions.
"$HOST_PY" - "$WHEEL" ${FER_EDGE_ARM64_EXTRA_REQS:-} >"$WORK/requirements.txt" <<'EOF'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
for line in meta.splitlines():
    if line.startswith("Requires-Dist:"):
        spec, _, marker = line.split(":", 1)[1].partition(";")
        if not marker.strip() or re.fullmatch(r"""\s*extra\s*==\s*["']device["']\s*""", marker):
            print(spec.strip())
print("pytest")
print("\n".join(sys.argv[2:]))
EOF
"$HOST_PY" - >"$WORK/constraints.txt" <<'EOF'
import re
from importlib.metadata import distributions
pins = {}
for d in distributions():
    name = re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "")).lower()
    if name and name != "fer-edge":
        pins[name] = f"{name}=={d.version}"
print("\n".join(sorted(pins.values())))
EOF
KEY=$(cat "$WORK/requirements.txt" "$WORK/constraints.txt" <(printf '%s\n' "${PIP_TARGET_OPTS[@]}") | sha256sum | cut -c1-16)
SITE=$CACHE/site-$KEY
if [ -f "$SITE/.complete" ] && [ -z "${FER_EDGE_ARM64_REFRESH:-}" ]; then
    log "aarch64 wheels: cached (site-$KEY)"
else
    log "installing aarch64 wheels: $(grep -v '^$' "$WORK/requirements.txt" | tr '\n' ' ')"
    rm -rf "$SITE.tmp"
    quiet pip-aarch64 "$HOST_PY" -m pip install -q --disable-pip-version-check --no-warn-script-location \
        "${PIP_TARGET_OPTS[@]}" --target "$SITE.tmp" -r "$WORK/requirements.txt" -c "$WORK/constraints.txt"
    find "$CACHE" -maxdepth 1 -name 'site-*' ! -name "site-$KEY.tmp" -exec rm -rf {} +
    touch "$SITE.tmp/.complete" && mv "$SITE.tmp" "$SITE"
fi
rm -rf "$CACHE/project"
quiet project-install "$HOST_PY" -m pip install -q --disable-pip-version-check --no-deps --target "$CACHE/project" "$WHEEL"
log "aarch64 site: $(cd "$SITE" && ls -d *.dist-info | sed 's/\.dist-info$//' | tr '\n' ' ')"

# --------------------------------------------------------------------------- 4. x86 reference
REF=$CACHE/parity_ref.npz
log "writing the x86 parity reference natively"
(cd "$REPO" && "$HOST_PY" "$HERE/arm64_parity.py" --write "$REF" ${FER_EDGE_ARM64_BUNDLE:+--bundle "$FER_EDGE_ARM64_BUNDLE"} \
    2>"$CACHE/logs/reference.log") ||
    { tail -n 30 "$CACHE/logs/reference.log" >&2; die "the host reference failed"; }

# --------------------------------------------------------------------------- 5. emulated runs
# The device tests' one real face: scikit-image's astronaut.png, read from the host's installed
# package (the emulated side has no scikit-image); tests/device/conftest.py honours this variable.
if [ -z "${FER_EDGE_ASTRONAUT:-}" ]; then
    FER_EDGE_ASTRONAUT=$("$HOST_PY" -c 'import importlib.util, pathlib
s = importlib.util.find_spec("skimage")
p = pathlib.Path(s.submodule_search_locations[0], "data", "astronaut.png") if s else None
print(p if p and p.is_file() else "")' 2>/dev/null || true)
    [ -n "$FER_EDGE_ASTRONAUT" ] && export FER_EDGE_ASTRONAUT || log "WARNING: no astronaut.png (scikit-image) on the host: the device tests that need a real face will skip"
fi
# guest CPU CMD...: the aarch64 python under qemu, with a clean environment.
guest() {
    local cpu=$1; shift
    local passthrough=()
    mapfile -t passthrough < <(env | grep -E '^FER_EDGE_[A-Z0-9_]*=' || true)  # ours below win
    (cd "$REPO" && env -i PATH=/usr/bin:/bin HOME="${HOME:-/tmp}" LANG=C.UTF-8 TMPDIR="${TMPDIR:-/tmp}" \
        "${passthrough[@]}" QEMU_CPU="$cpu" PYTHONNOUSERSITE=1 PYTHONPATH="$CACHE/project:$SITE" \
        FER_EDGE_ARM64=1 FER_EDGE_ARM64_REF="$REF" FER_EDGE_ARM64_REPORT="$CACHE/parity-$cpu.json" \
        "$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3.11" -P "$@")
}
use_cpu() {  # qemu 7.2 shows the guest the host's x86 /proc/cpuinfo; -L makes it read ROOT's instead
    guest "$1" "$HERE/cpuinfo.py" >"$ROOT/proc/cpuinfo.tmp" || die "cannot emulate CPU '$1' (see cpuinfo.py)"
    mv "$ROOT/proc/cpuinfo.tmp" "$ROOT/proc/cpuinfo"
}

use_cpu "$MAIN_CPU"
MACHINE=$(guest "$MAIN_CPU" -c 'import platform; print(platform.machine())')
[ "$MACHINE" = aarch64 ] || die "the emulated interpreter reports platform.machine() == '$MACHINE', not aarch64"
log "emulated interpreter: platform.machine() == '$MACHINE' (QEMU_CPU=$MAIN_CPU)"

FAILED=()
rm -f "$CACHE"/parity-*.json
log "pytest -m arm64 under emulation (QEMU_CPU=$MAIN_CPU)"
[ "$#" -gt 0 ] || set -- tests/
guest "$MAIN_CPU" -m pytest -m arm64 -p no:cacheprovider -q -rfEs --durations=8 "$@" || FAILED+=("pytest ($MAIN_CPU)")

for cpu in $EXTRA_CPUS; do
    log "parity test again on QEMU_CPU=$cpu"
    use_cpu "$cpu"
    guest "$cpu" -m pytest -p no:cacheprovider -q tests/arm64/test_arm64_parity.py || FAILED+=("parity ($cpu)")
done

# --------------------------------------------------------------------------- summary
for f in "$CACHE"/parity-*.json; do
    [ -f "$f" ] || continue
    "$HOST_PY" - "$f" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
e, d, c = r["emotion"], r["detector"], r["chain"]
o, t = r["emotion_end_to_end"], r["tolerances"]
print(f"[arm64 parity {r['qemu_cpu']}] emotion model: {r['faces']} faces, top-1 same {e['top1_equal_all']}/{r['faces']} "
      f"({e['ambiguous']} near-ties), max |dp| {e['max_prob_diff']:.5f} (tol {t['prob']:.5f})")
print(f"[arm64 parity {r['qemu_cpu']}] prepare_face (upscale) max diff {r['crop_max_diff']} grey levels on "
      f"{100 * r['crop_pixels_differing']:.1f}% of pixels -> emotion top-1 same {o['top1_equal_all']}/{r['faces']}, "
      f"max |dp| {o['max_prob_diff']:.4f}, p95 {o['p95_prob_diff']:.4f} (reported, not asserted)")
print(f"[arm64 parity {r['qemu_cpu']}] detector: {d['scenes']} scenes, best anchor same {d['top1_agree']}/{d['scenes']}, "
      f"max |dscore| {d['max_score_diff']:.2e} (tol {r['tolerances']['score']}), max box diff {d['max_box_diff_px']:.3f} px; "
      f"detector->crop_face (shrink) max diff {c['crop_max_diff']} -> emotion max |dp| {c['max_prob_diff']:.1e}")
y = r.get("yunet")
if y:
    print(f"[arm64 parity {r['qemu_cpu']}] YuNet: {y['scenes']} scenes, {y['faces_paired']} faces paired, "
          f"max |dscore| {y['max_score_diff']:.2e} (tol {y['tolerances']['score']}), max box/landmark diff "
          f"{y['max_box_or_landmark_diff_px']:.3f} px (tol {y['tolerances']['box_px']}); YuNet->crop_face max diff "
          f"{y['chain_crop_max_diff']} -> emotion max |dp| {y['chain_max_prob_diff']:.1e}")
EOF
done
if [ "${#FAILED[@]}" -gt 0 ]; then die "failed: ${FAILED[*]}"; fi
STATUS=PASSED
