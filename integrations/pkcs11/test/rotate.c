// SPDX-License-Identifier: Apache-2.0
/*
 * rotate: a key deleted and created again under the same name is another key, so the object
 * handles an application holds for the old one must not come to name the new one (PKCS#11
 * objects never change their key type or value under a handle). Run by handles_test.go
 * (TestRotatedKeyHandles) as: rotate MODULE NAME 'COMMAND', with PALISADE_SOCKET set; COMMAND
 * deletes the key NAME (an ECDSA P-256 key) and creates it again. Exit status 0 iff every
 * check passed.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "expect.h"

static CK_FUNCTION_LIST_PTR f;

/* find returns the handle of the object of class c labelled name, or 0. The search also makes
 * the module read the key list again. */
static CK_OBJECT_HANDLE find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS c, const char *name)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &c, sizeof(c)}, {CKA_LABEL, (void *)name, strlen(name)}};
	CK_OBJECT_HANDLE o = 0;
	CK_ULONG n = 0;

	EXPECT(f->C_FindObjectsInit(s, t, 2), CKR_OK);
	EXPECT(f->C_FindObjects(s, &o, 1, &n), CKR_OK);
	EXPECT(f->C_FindObjectsFinal(s), CKR_OK);
	return n ? o : 0;
}

static void rotate(const char *cmd)
{
	if (system(cmd) != 0) {
		fprintf(stderr, "FAIL: %s\n", cmd);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	void *lib;
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE priv, pub, priv2, pub2;
	CK_MECHANISM mech = {CKM_ECDSA_SHA256, NULL, 0};
	CK_BYTE point[128], point2[128], sig[64];
	CK_ULONG sig_len;
	CK_ATTRIBUTE ap = {CKA_EC_POINT, point, sizeof(point)}, ap2 = {CKA_EC_POINT, point2, sizeof(point2)};
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE akt = {CKA_KEY_TYPE, &kt, sizeof(kt)};

	if (argc != 4) {
		fprintf(stderr, "usage: rotate MODULE NAME COMMAND\n");
		return 2;
	}
	lib = dlopen(argv[1], RTLD_NOW);
	if (!lib || !(get = (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(lib, "C_GetFunctionList")) || get(&f) != CKR_OK) {
		fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
		return 2;
	}
	EXPECT(f->C_Initialize(NULL), CKR_OK);
	EXPECT(f->C_OpenSession(1, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_OK);
	priv = find(s, CKO_PRIVATE_KEY, argv[2]);
	pub = find(s, CKO_PUBLIC_KEY, argv[2]);
	if (!priv || !pub) {
		fprintf(stderr, "FAIL: key %s not found\n", argv[2]);
		return 1;
	}
	EXPECT(f->C_GetAttributeValue(s, pub, &ap, 1), CKR_OK);

	/* The key is replaced: the old handles name nothing, the new key has new handles. */
	rotate(argv[3]);
	priv2 = find(s, CKO_PRIVATE_KEY, argv[2]);
	pub2 = find(s, CKO_PUBLIC_KEY, argv[2]);
	if (!priv2 || !pub2 || priv2 == priv || pub2 == pub) {
		fprintf(stderr, "FAIL: new key's handles %#lx %#lx, old ones %#lx %#lx\n", priv2, pub2, priv, pub);
		failures++;
	}
	EXPECT(f->C_GetAttributeValue(s, priv, &akt, 1), CKR_OBJECT_HANDLE_INVALID);
	EXPECT(f->C_GetAttributeValue(s, pub, &ap2, 1), CKR_OBJECT_HANDLE_INVALID);
	EXPECT(f->C_SignInit(s, &mech, priv), CKR_KEY_HANDLE_INVALID);
	ap2.ulValueLen = sizeof(point2);
	EXPECT(f->C_GetAttributeValue(s, pub2, &ap2, 1), CKR_OK);
	if (ap.ulValueLen == ap2.ulValueLen && memcmp(point, point2, ap.ulValueLen) == 0) {
		fprintf(stderr, "FAIL: the new key has the old key's public point\n");
		failures++;
	}
	sig_len = sizeof(sig);
	EXPECT(f->C_SignInit(s, &mech, priv2), CKR_OK);
	EXPECT(f->C_Sign(s, (CK_BYTE *)"m", 1, sig, &sig_len), CKR_OK);

	/* A signature begun with a key that is replaced before it is made, once the module has
	 * read the list again, fails rather than signing with the new key. */
	EXPECT(f->C_SignInit(s, &mech, priv2), CKR_OK);
	rotate(argv[3]);
	find(s, CKO_PRIVATE_KEY, argv[2]);
	sig_len = sizeof(sig);
	EXPECT(f->C_Sign(s, (CK_BYTE *)"m", 1, sig, &sig_len), CKR_KEY_HANDLE_INVALID);

	EXPECT(f->C_CloseSession(s), CKR_OK);
	EXPECT(f->C_Finalize(NULL), CKR_OK);
	return failures ? 1 : 0;
}
