#!/usr/bin/env bash
# Stage the root filesystem of the embedrank image: the binary, exactly the shared libraries it
# links (from ldd, so a CUDA build brings its libcuda/libcublas… along), a passwd/group with the
# non-root user 65532, /tmp, /models and the CA bundle (pull talks HTTPS).
# Usage: deploy/stage-rootfs.sh BINARY OUTDIR      (OUTDIR/rootfs is what deploy/Dockerfile copies)
set -euo pipefail
bin=${1:?usage: stage-rootfs.sh BINARY OUTDIR}
out=${2:?usage: stage-rootfs.sh BINARY OUTDIR}
[[ -x $bin ]] || { echo "stage-rootfs: $bin is not an executable (build it first: cargo build --release)" >&2; exit 1; }
root=$out/rootfs
rm -rf "$root"
mkdir -p "$root"/{etc/ssl/certs,tmp,models}
chmod 1777 "$root/tmp"
chmod 0755 "$root/models"

# The binary, without debug sections (a debug build is ~5x larger with them).
cp "$bin" "$root/embedrank"
if command -v strip >/dev/null; then strip --strip-debug "$root/embedrank"; fi
chmod 0755 "$root/embedrank"

# Every library ldd resolves, at the same path, plus the dynamic loader. Symlinked names are
# copied as files (cp -L) so the image needs no link farm.
ldd "$bin" | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
if ldd "$bin" 2>&1 | grep -q "not found"; then
  echo "stage-rootfs: unresolved libraries:" >&2; ldd "$bin" | grep "not found" >&2; exit 1
fi
# glibc's name-service libraries are loaded at run time, not linked: getaddrinfo for HF downloads
# needs the files/dns modules.
for m in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
  for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64 /lib/aarch64-linux-gnu; do
    if [[ -e $d/$m ]]; then mkdir -p "$root$d"; cp -L "$d/$m" "$root$d/$m"; break; fi
  done
done

cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
embedrank:x:65532:65532:embedrank:/tmp:/sbin/nologin
P
cat > "$root/etc/group" <<'G'
root:x:0:
embedrank:x:65532:
G
echo "hosts: files dns" > "$root/etc/nsswitch.conf"
ca=/etc/ssl/certs/ca-certificates.crt
if [[ -f $ca ]]; then cp -L "$ca" "$root/etc/ssl/certs/ca-certificates.crt"; else
  echo "stage-rootfs: warning: no $ca; embedrank pull will not verify HTTPS" >&2; fi
du -sh "$root" | awk '{print "stage-rootfs: " $1 " in " $2}'
