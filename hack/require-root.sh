#!/usr/bin/env bash
# Stops with a clear message when not root: the tests load BPF programs and create network
# namespaces, which need root. They never pass silently without it.
if [ "$(id -u)" -ne 0 ]; then
  echo "$1 needs root (BPF programs, network namespaces): run it as root" >&2
  exit 1
fi
