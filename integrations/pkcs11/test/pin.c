// SPDX-License-Identifier: Apache-2.0
/*
 * pin: a PIN the signing PAL finds incorrect costs one try, not one per signature: the module
 * forgets it (logs out), so a server that keeps signing with a mistyped PIN does not lock the
 * key. Run by pin_test.go (TestWrongPINLogsOut) as: pin MODULE NAME RIGHT WRONG, with
 * PALISADE_SOCKET set, NAME an ECDSA P-256 key with PIN RIGHT and two tries. Exit status 0
 * iff every check passed.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "expect.h"

static CK_FUNCTION_LIST_PTR f;

int main(int argc, char **argv)
{
	void *lib;
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
	CK_SESSION_HANDLE s;
	CK_OBJECT_CLASS c = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[2] = {{CKA_CLASS, &c, sizeof(c)}, {CKA_LABEL, NULL, 0}};
	CK_OBJECT_HANDLE key = 0;
	CK_ULONG n = 0, sig_len;
	CK_MECHANISM mech = {CKM_ECDSA_SHA256, NULL, 0};
	CK_BYTE sig[64];

	if (argc != 5) {
		fprintf(stderr, "usage: pin MODULE NAME RIGHT WRONG\n");
		return 2;
	}
	lib = dlopen(argv[1], RTLD_NOW);
	if (!lib || !(get = (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(lib, "C_GetFunctionList")) || get(&f) != CKR_OK) {
		fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
		return 2;
	}
	t[1].pValue = argv[2];
	t[1].ulValueLen = strlen(argv[2]);
	EXPECT(f->C_Initialize(NULL), CKR_OK);
	EXPECT(f->C_OpenSession(1, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_OK);
	EXPECT(f->C_Login(s, CKU_USER, (CK_BYTE *)argv[4], strlen(argv[4])), CKR_OK);
	EXPECT(f->C_FindObjectsInit(s, t, 2), CKR_OK);
	EXPECT(f->C_FindObjects(s, &key, 1, &n), CKR_OK);
	EXPECT(f->C_FindObjectsFinal(s), CKR_OK);
	if (n != 1) {
		fprintf(stderr, "FAIL: key %s not found after C_Login\n", argv[2]);
		return 1;
	}

	/* The wrong PIN: one try, then the module asks for a login instead of trying it again. */
	sig_len = sizeof(sig);
	EXPECT(f->C_SignInit(s, &mech, key), CKR_OK);
	EXPECT(f->C_Sign(s, (CK_BYTE *)"m", 1, sig, &sig_len), CKR_PIN_INCORRECT);
	for (int i = 0; i < 3; i++)
		EXPECT(f->C_SignInit(s, &mech, key), CKR_USER_NOT_LOGGED_IN);

	/* The key is not locked: the right PIN signs. */
	EXPECT(f->C_Login(s, CKU_USER, (CK_BYTE *)argv[3], strlen(argv[3])), CKR_OK);
	sig_len = sizeof(sig);
	EXPECT(f->C_SignInit(s, &mech, key), CKR_OK);
	EXPECT(f->C_Sign(s, (CK_BYTE *)"m", 1, sig, &sig_len), CKR_OK);

	EXPECT(f->C_CloseSession(s), CKR_OK);
	EXPECT(f->C_Finalize(NULL), CKR_OK);
	return failures ? 1 : 0;
}
