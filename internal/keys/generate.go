package keys

// Rebuild the shipped key PALs (the command of docs/sdk.md; TestShippedPALsReproduce checks it).
//go:generate clang --target=wasm32 -nostdlib -ffreestanding -fno-builtin -O2 -Wall -Wextra -Werror -Wl,--no-entry -Wl,-z,stack-size=65536 -I ../../sdk/c -o pals/keygen.wasm pals/keygen.c ../../sdk/c/palisade.c ../../sdk/c/libc.c ../../sdk/c/sha256.c ../../sdk/c/wasm32/entry.c
//go:generate clang --target=wasm32 -nostdlib -ffreestanding -fno-builtin -O2 -Wall -Wextra -Werror -Wl,--no-entry -Wl,-z,stack-size=65536 -I ../../sdk/c -o pals/signer.wasm pals/signer.c ../../sdk/c/palisade.c ../../sdk/c/libc.c ../../sdk/c/sha256.c ../../sdk/c/wasm32/entry.c
