#!/bin/sh
# Benchmark: `kiln build` of a reference recipe on debian-12 beside
# virt-customize applying the same build-phase commands to a copy of the same
# image, measured in the same run.  Prints both times and their ratio.
#
#   sh bench/build.sh [KILN]      (KILN defaults to build/builder/kiln)
#
# kiln's figure covers the whole pipeline (boot, build, clean shutdown,
# capture, a test instance booted from the result, publish);
# virt-customize's covers its appliance boot and the commands.  Needs root,
# QEMU, libguestfs-tools.  kiln runs under the accelerator its probe picks
# (the manifest says which); libguestfs runs under the same (force_tcg).
set -eu
cd "$(dirname "$0")/.."
kiln=${1:-build/builder/kiln}
work=$(mktemp -d /var/tmp/kiln-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM

base=$("$kiln" image bootstrap debian-12)
echo "base image: $base"

cat > "$work/recipe.yml" <<RECIPE
name: bench-reference
semanticVersion: 1.0.0
parentImage: $base
components:
  - componentArn: $(pwd)/bench/data/reference-component.yml
RECIPE

start=$(date +%s.%N)
"$kiln" build "$work/recipe.yml" --output "$work/out" >"$work/kiln.log" 2>&1 || { cat "$work/kiln.log"; exit 1; }
end=$(date +%s.%N)
kiln_s=$(echo "$end - $start" | bc)

# The same commands, one --run-command each, on a copy of the same image.
cp "$base" "$work/copy.qcow2"
set --
while IFS= read -r cmd; do
  set -- "$@" --run-command "$cmd"
done <<CMDS
mkdir -p /opt/bench
for i in \$(seq 1 50); do echo "file \$i" > /opt/bench/file-\$i.txt; done
useradd --system --no-create-home --shell /usr/sbin/nologin bench-svc
echo 'bench build' > /etc/motd
tar -C /opt -czf /opt/bench.tar.gz bench
CMDS
# libguestfs would try KVM where kiln's probe found it unusable (QEMU
# aborts "failed to set MSR"): it runs under what kiln's build ran under.
accel_name=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("accelerator", {}).get("name", ""))' "$work"/out/bench-reference-*.manifest.json)
if [ "$accel_name" = tcg ]; then
  LIBGUESTFS_BACKEND_SETTINGS=force_tcg
  export LIBGUESTFS_BACKEND_SETTINGS
fi
start=$(date +%s.%N)
LIBGUESTFS_BACKEND=direct virt-customize -q -a "$work/copy.qcow2" "$@" >"$work/vc.log" 2>&1 || { cat "$work/vc.log"; exit 1; }
end=$(date +%s.%N)
vc_s=$(echo "$end - $start" | bc)

accel=$(python3 -c 'import json, sys; a = json.load(open(sys.argv[1])).get("accelerator", {}); print(a.get("name", "?"), "-", a.get("reason", ""))' "$work"/out/bench-reference-*.manifest.json)
printf 'kiln accelerator: %s\n' "$accel"
python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
print("kiln stages: " + ", ".join("%s %.1f s" % (s["name"], s.get("seconds", 0)) for s in m["stages"]))' "$work"/out/bench-reference-*.manifest.json
printf 'kiln build (build, capture, test instance, publish): %.1f s\n' "$kiln_s"
printf 'virt-customize (same build commands only):         %.1f s\n' "$vc_s"
printf 'ratio kiln / virt-customize: %.2f\n' "$(echo "$kiln_s / $vc_s" | bc -l)"
