#!/usr/bin/env bash
# Installs what Palisade needs on a Debian 12 machine: the C toolchains for PALs (clang + lld
# for wasm32, gcc for native x86-64), a real TPM 2.0 for development (swtpm) and tpm2-tools as
# an independent cross-check, and the real clients the end-to-end tests drive.
# Go (>= 1.26, from go.dev or the toolchain the go command fetches) must already be installed.
set -euo pipefail

pkgs=(clang lld gcc libc6-dev linux-libc-dev make swtpm swtpm-tools tpm2-tools openssl curl openssh-client sshpass apache2-utils)
# The OpenSSH integrations' tests (docs/ssh.md): a real sshd (started by the tests on a loopback
# port; the system service is left alone), pamtester, PAM headers for pam_palisade.so, and
# pam_wrapper so PAM tests never touch /etc/pam.d.
pkgs+=(openssh-server pamtester libpam0g-dev libpam-wrapper)
# The PKCS#11 module (integrations/pkcs11): p11-kit's PKCS#11 header, and the real programs its
# test drives (pkcs11-tool, p11tool, OpenSSL's pkcs11 engine, nginx, Apache httpd with mod_ssl).
# The test runs its own nginx and Apache instances; the packages' system services are not used.
pkgs+=(libp11-kit-dev opensc gnutls-bin libengine-pkcs11-openssl nginx apache2)
# palisade bench's web-server section (internal/bench): the same nginx with its key in the other
# PKCS#11 modules, SoftHSM2 and tpm2-pkcs11 (on swtpm, through the tpm2-abrmd resource manager
# the bench starts itself on a private D-Bus bus, dbus-daemon, and on swtpm's TCTI; the package's
# system service is not used).
pkgs+=(softhsm2 libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon libtss2-tcti-swtpm0)
# libFuzzer and the sanitizers' runtimes for clang: libpalisade's fuzz target (clients/c/fuzz).
pkgs+=(libclang-rt-14-dev)
# Without /dev/kvm the kvm engine's tests run under a real KVM nested in QEMU
# (internal/engine/kvm/testdata/qemu/run-tests.sh): QEMU, a static busybox for its initramfs, and kmod.
[ -e /dev/kvm ] || pkgs+=(qemu-system-x86 busybox-static kmod cpio)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "setup: installing ${missing[*]}" >&2
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -q
	# The tests run their own nginx, Apache and sshd on loopback high ports; the packages'
	# system services must not start (nginx and Apache would both want port 80). Where no
	# policy-rc.d forbids it already, one does for the length of the install.
	policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
		$sudo chmod 755 "$policy"
		trap '$sudo rm -f "$policy"' EXIT
	fi
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
	[ -z "$policy" ] || $sudo rm -f "$policy"
fi

if ! command -v go >/dev/null; then
	echo "setup: Go is not installed; install Go 1.26 or newer and put it on PATH" >&2
	exit 1
fi
go mod download
