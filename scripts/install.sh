#!/usr/bin/env bash
# Install tagstream into .venv/ in this checkout: the pinned dependencies, then the
# project itself (editable), which puts the `tagstream` command in .venv/bin.
#   scripts/install.sh          runtime only
#   scripts/install.sh --dev    plus what the tests need (pytest, ruff, mypy, PulseAudio,
#                               Chromium, Icecast, promtool, espeak-ng)
# Debian packages are installed with apt-get when missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

# ffmpeg decodes network streams (python -m streamer --url).
packages=(libportaudio2 ffmpeg)
if (( dev )); then
  # A private PulseAudio for capture tests, Chromium for the web page, Icecast for station
  # streams, promtool (prometheus) for the alert rules, espeak-ng for synthetic speech,
  # openssl for the HTTPS tests' self-signed certificate.
  packages+=(pulseaudio pulseaudio-utils libasound2-plugins chromium libatomic1
             icecast2 prometheus espeak-ng openssl)
fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
  if [[ $(id -u) -eq 0 ]]; then
    apt_get=(apt-get)
  elif command -v sudo >/dev/null; then
    apt_get=(sudo apt-get)
  else
    echo "error: missing Debian packages ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  "${apt_get[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python="$candidate"; break
  fi
done
if [[ -z "$python" ]]; then
  echo "error: tagstream needs Python 3.11; install it (apt-get install python3.11-venv) and rerun" >&2
  exit 1
fi
[[ -x .venv/bin/python ]] || "$python" -m venv .venv

requirements=requirements.txt
(( dev )) && requirements=requirements-dev.txt
# Redo the pip steps when the pins or the project's metadata (packages, scripts) change.
stamp=".venv/.installed-$(cat requirements.txt "$requirements" pyproject.toml | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$requirements"
  # musicnn ships the pretrained MSD weights; its metadata pins an ancient numpy, hence --no-deps.
  .venv/bin/python -m pip install -q --no-deps musicnn==0.1.0
  # silero-vad ships the speech detector's ONNX file (model/content.py); its metadata asks
  # for torch, which the ONNX file does not need, hence --no-deps.
  .venv/bin/python -m pip install -q --no-deps silero-vad==6.2.3
  # pyAudioAnalysis ships the speech/music SVM the content classifier also asks
  # (model/pyaudioanalysis.py reads only its model files); its metadata pulls in plotting,
  # tagging and HMM libraries that are not needed, hence --no-deps. An sdist: built with
  # requirements.txt's setuptools.
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation pyAudioAnalysis==0.3.14
  # inaSpeechSegmenter 0.6.8 ships its broadcast speech/music network (model/inaspeech.py
  # reads only that HDF5 file; later releases download their models); its metadata asks for
  # TensorFlow 2's own Keras, pyannote and scikit-image, none of which is used, hence --no-deps.
  .venv/bin/python -m pip install -q --no-deps inaSpeechSegmenter==0.6.8
  # The project itself, editable: `tagstream` in .venv/bin, imports from this checkout.
  # Its dependencies are the pins above; the build backend is requirements.txt's setuptools.
  # (Its output, only setuptools' notes on editable installs, is shown when it fails.)
  if ! log=$(.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1); then
    echo "$log" >&2
    echo "error: installing tagstream itself failed (above)" >&2
    exit 1
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# tf2onnx's wheel also installs its developer scripts as a top-level `tools` folder with
# no __init__.py. Python takes that folder for a namespace package before it asks the
# editable install, so `tagstream live` (tools/) failed to import outside a `python -m`
# run from the checkout. Nothing imports those scripts: remove the files tf2onnx's
# RECORD lists there (every run, so an existing .venv is mended too).
.venv/bin/python - <<'PY'
import importlib.metadata
import pathlib

try:
    dist = importlib.metadata.distribution("tf2onnx")
except importlib.metadata.PackageNotFoundError:
    raise SystemExit(0)
stray = pathlib.Path(dist.locate_file("tools"))
for name in dist.files or ():
    if name.parts[0] == "tools":
        pathlib.Path(dist.locate_file(name)).unlink(missing_ok=True)
if stray.is_dir() and not (stray / "__init__.py").exists():
    for folder in sorted((d for d in stray.rglob("*") if d.is_dir()), reverse=True):
        if folder.name == "__pycache__":
            for cached in folder.glob("*.pyc"):
                cached.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(stray.iterdir()):
        stray.rmdir()
PY
echo "tagstream installed in $(pwd)/.venv (run .venv/bin/tagstream --help)"
