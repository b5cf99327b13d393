# Build rules for native x86-64 PALs (engine kvm), Debian gcc. Include from a PAL's Makefile:
#
#   PALISADE_SDK := path/to/sdk/c
#   include $(PALISADE_SDK)/x86_64/native.mk
#   mypal.elf: mypal.c $(PALISADE_NATIVE_SRCS)
#   	$(PALISADE_NATIVE_CC) $(PALISADE_NATIVE_CFLAGS) -o $@ $^ $(PALISADE_NATIVE_LDFLAGS)
#
# internal/engine/kvm/cbuild uses the same flags (keep them in step).
PALISADE_NATIVE_CC ?= gcc
PALISADE_NATIVE_CFLAGS = -std=c11 -O2 -Wall -ffreestanding -fno-builtin -nostdlib -static \
	-fno-pic -fno-pie -mno-red-zone -fno-stack-protector -fcf-protection=none \
	-fno-asynchronous-unwind-tables -fno-exceptions -I$(PALISADE_SDK)
PALISADE_NATIVE_LDFLAGS = -no-pie -Wl,-T,$(PALISADE_SDK)/x86_64/pal.ld -Wl,--build-id=none \
	-Wl,-z,noexecstack -Wl,-z,norelro -Wl,-z,max-page-size=4096 -lgcc
PALISADE_NATIVE_SRCS = $(PALISADE_SDK)/x86_64/entry.S \
	$(wildcard $(PALISADE_SDK)/palisade.c $(PALISADE_SDK)/libc.c $(PALISADE_SDK)/sha256.c)
