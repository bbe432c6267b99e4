#!/usr/bin/env bash
# One-command environment for depth_perception on a Debian machine with Python 3.11 and no ROS.
#
#   scripts/bootstrap.sh        (called by `make demo` and `make test`)
#
# Idempotent and fast when nothing changed: each step keeps a stamp of its inputs under .venv/.
# Leaves ./env.sh, which tests, the demo and users source.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
cd "$ROOT"

log() { printf '[bootstrap] %s\n' "$*"; }
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# pip warns once per package about this machine's unused local index paths; keep the rest.
pip_install() {
  "$PY" -m pip install -q "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

# 1. Debian packages: open3d-cpu needs libusb; cmake/g++ build the interface packages.
apt_needed=()
for pkg in libusb-1.0-0 cmake g++ make; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_needed+=("$pkg")
done
if [ ${#apt_needed[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_needed[*]}"
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_needed[@]}"
fi

# 2. Virtual environment with pinned requirements.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "Python 3.11 is required (ROS 2 Kilted wheels are cp311)"; exit 1; }

req_stamp="$(stamp_of requirements.txt requirements-ml.txt scripts/bootstrap.sh)"
if [ "$(cat "$VENV/.stamp-requirements" 2>/dev/null)" != "$req_stamp" ]; then
  log "installing Python requirements (first run takes a few minutes)"
  pip_install --upgrade pip
  # torch first, alone, so pip takes the CPU build available on this machine.
  pip_install "$(grep -E '^torch==' requirements-ml.txt)"
  pip_install -r requirements.txt
  echo "$req_stamp" > "$VENV/.stamp-requirements"
  # new wheels may have reset the CMake exports patched below
  rm -f "$VENV/.stamp-msgs"
  [ ! -f "$VENV/.stamp-tf2-msgs" ] || echo rebuild > "$VENV/.stamp-tf2-msgs"
fi

# 3. The ROS wheels' CMake exports name their build machine's Python and numpy include dirs;
#    point them at ours so find_package() of the message packages works for colcon builds.
py_inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_inc="$("$PY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t exports < <(grep -rlE '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' || true)
if [ ${#exports[@]} -gt 0 ]; then
  log "remapping build-machine paths in ${#exports[@]} CMake export files"
  sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_inc}#g" \
         -e "s#/opt/python/cp311-cp311/include/python3.11#${py_inc}#g" "${exports[@]}"
fi

# 4. Interface packages, built with colcon/rosidl into the venv prefix, which is this
#    environment's ROS underlay (ament index, libs, Python modules).
colcon_build() {  # colcon_build <package dir> <name>
  log "building $1 ($2) with colcon"
  mkdir -p "$ROOT/.build"
  (
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
    "$VENV/bin/colcon" --log-base "$ROOT/.build/log" build \
      --base-paths "$ROOT/$1" --build-base "$ROOT/.build/colcon" \
      --install-base "$VENV" --merge-install \
      --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -Wno-dev \
      --event-handlers console_cohesion- summary+ >"$ROOT/.build/colcon-build-$2.log" 2>&1 \
      || { cat "$ROOT/.build/colcon-build-$2.log"; exit 1; }
  )
}
dir_stamp() { find "$1" -type f | sort | xargs cat | sha256sum | cut -c1-16; }

# 4a. msg/: our own interfaces (depth_perception_msgs).
msg_stamp="$(dir_stamp msg)"
if [ "$(cat "$VENV/.stamp-msgs" 2>/dev/null)" != "$msg_stamp" ] \
   || ! "$PY" -c 'import depth_perception_msgs.msg' 2>/dev/null; then
  colcon_build msg depth_perception_msgs
  echo "$msg_stamp" > "$VENV/.stamp-msgs"
fi

# 4b. tf2_msgs (for /tf_static) has no PyPI wheel: build msg_compat/tf2_msgs (TFMessage only,
#     upstream's definition) only when no tf2_msgs imports; once built here, rebuilt when its
#     files change. A ROS install's real tf2_msgs is never replaced (see msg_compat/README.md).
tf2_stamp="$(dir_stamp msg_compat/tf2_msgs)"
tf2_built="$(cat "$VENV/.stamp-tf2-msgs" 2>/dev/null || true)"
if ! "$PY" -c 'import tf2_msgs.msg' 2>/dev/null \
   || { [ -n "$tf2_built" ] && [ "$tf2_built" != "$tf2_stamp" ]; }; then
  colcon_build msg_compat/tf2_msgs tf2_msgs
  echo "$tf2_stamp" > "$VENV/.stamp-tf2-msgs"
fi

# 5. The project itself, editable, so console scripts (nodes, CLI) point at this checkout.
proj_stamp="$(stamp_of setup.py setup.cfg)"
if [ "$(cat "$VENV/.stamp-project" 2>/dev/null)" != "$proj_stamp" ]; then
  log "installing depth_perception (editable)"
  pip_install --no-deps --no-build-isolation -e . 2>/dev/null
  echo "$proj_stamp" > "$VENV/.stamp-project"
fi

# 6. The env file.
cat > "$ROOT/env.sh" <<ENV
# Generated by scripts/bootstrap.sh: source it to use depth_perception from this checkout.
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:\${PATH}"
export AMENT_PREFIX_PATH="$VENV\${AMENT_PREFIX_PATH:+:\${AMENT_PREFIX_PATH}}"
export CMAKE_PREFIX_PATH="$VENV\${CMAKE_PREFIX_PATH:+:\${CMAKE_PREFIX_PATH}}"
export LD_LIBRARY_PATH="$VENV/lib\${LD_LIBRARY_PATH:+:\${LD_LIBRARY_PATH}}"
export RMW_IMPLEMENTATION="\${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Camera-sized images between processes need a larger shared-memory segment (see the file).
export FASTDDS_DEFAULT_PROFILES_FILE="\${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds_large_images.xml}"
export PYTHONUNBUFFERED=1
ENV
"$PY" -c 'import rclpy, depth_perception_msgs.msg, tf2_msgs.msg, depth_perception, torch, open3d, cv2, rosbags' \
  || { echo "bootstrap: the environment does not import"; exit 1; }
log "ready: source env.sh"
