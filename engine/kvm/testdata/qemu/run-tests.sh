#!/bin/sh
# Run engine/kvm's tests against a real KVM on a machine without /dev/kvm: boot Debian's kernel
# in QEMU (TCG, a CPU model with SVM), load kvm_amd there, and run the test binary with the host's
# root file system shared read-only over 9p (so gcc and the sources are there too).
#
#   apt-get install qemu-system-x86 linux-image-amd64 busybox-static
#   engine/kvm/testdata/qemu/run-tests.sh [go test flags, e.g. -test.run TestHostile]
#
# Slow (everything runs emulated) and only a functional check: its timings mean nothing.
set -eu
repo=$(cd "$(dirname "$0")/../../../.." && pwd)
kver=${KVER:-$(ls /lib/modules | sort -V | tail -1)}
kernel=/boot/vmlinuz-$kver
work=${WORK:-/var/tmp/palisade-kvm-qemu}   # not /tmp: the guest mounts a tmpfs there
rm -rf "$work" && mkdir -p "$work/rd/bin" "$work/rd/mods" "$work/rd/proc" "$work/rd/sys" "$work/rd/dev" "$work/rd/newroot"
cp /bin/busybox "$work/rd/bin/busybox"
i=0
for m in $(modprobe --show-depends -S "$kver" -a virtio_pci 9pnet_virtio 9p | awk '{print $2}' | awk '!seen[$0]++'); do
	i=$((i + 1)); cp "$m" "$work/rd/mods/$(printf %02d "$i")-$(basename "$m")"
done
cat > "$work/rd/init" <<EOI
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in /mods/*.ko; do insmod \$m; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /newroot || poweroff -f
mount -t tmpfs tmp /newroot/tmp
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys; mount -t devtmpfs dev /newroot/dev
exec switch_root /newroot /bin/sh $work/guest.sh
EOI
chmod +x "$work/rd/init"
(cd "$work/rd" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initramfs.gz")
cat > "$work/guest.sh" <<EOG
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp
modprobe kvm_amd || modprobe kvm_intel
cd $repo/engine/kvm
$work/kvm.test -test.v $* 2>&1
echo "=== EXIT \$?"
poweroff -f
EOG
(cd "$repo" && go test -c -o "$work/kvm.test" ./engine/kvm)
qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 -nographic -no-reboot \
	-kernel "$kernel" -initrd "$work/initramfs.gz" -append "console=ttyS0 quiet panic=-1" \
	-fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap \
	-device virtio-9p-pci,fsdev=r,mount_tag=hostroot | tee "$work/out.txt"
grep -q '^=== EXIT 0' "$work/out.txt"
