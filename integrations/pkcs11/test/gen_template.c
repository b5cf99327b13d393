// SPDX-License-Identifier: Apache-2.0
/*
 * gen_template: C_GenerateKeyPair's template rules that pkcs11-tool and p11tool cannot express
 * (a read-only session, a wrong class, mechanism parameters, vendor attributes...), against
 * the module and a real palisaded. Run by keygen_test.go (TestGenerateKeyPairTemplates) with
 * the module's path as argv[1] and PALISADE_SOCKET set; PALISADE_PKCS11_KEYS must be "tmpl-".
 * Each refused template must create nothing, which the driver checks with palisade key list;
 * the accepted ones print "CREATED name". Exit status 0 iff every check passed.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "expect.h"

static CK_FUNCTION_LIST_PTR f;
static CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
static CK_OBJECT_CLASS pub_class = CKO_PUBLIC_KEY, priv_class = CKO_PRIVATE_KEY;
static CK_KEY_TYPE rsa_type = CKK_RSA;
static CK_ULONG bits2048 = 2048;
static uint8_t e65537[] = {1, 0, 1}, e3[] = {3}, e65537_padded[] = {0, 0, 1, 0, 1};
static uint8_t p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static uint8_t ed_printable[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd', 's', '2', '5', '5', '1', '9'};
static uint8_t not_der[] = {0x30, 0x00};

#define A(t, v) {t, &(v), sizeof(v)}
#define S(t, s) {t, (void *)(s), sizeof(s) - 1}

static CK_RV gen(CK_SESSION_HANDLE s, CK_MECHANISM_TYPE m, CK_ATTRIBUTE *pub, CK_ULONG npub, CK_ATTRIBUTE *priv,
		 CK_ULONG npriv, CK_OBJECT_HANDLE *hpub, CK_OBJECT_HANDLE *hpriv)
{
	CK_MECHANISM mech = {m, NULL, 0};

	return f->C_GenerateKeyPair(s, &mech, pub, npub, priv, npriv, hpub, hpriv);
}

#define GEN(s, m, pub, priv) gen(s, m, pub, sizeof(pub) / sizeof(pub[0]), priv, sizeof(priv) / sizeof(priv[0]), &hp, &hk)

int main(int argc, char **argv)
{
	void *lib;
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR);
	CK_SESSION_HANDLE ro, rw;
	CK_OBJECT_HANDLE hp = 0, hk = 0;
	CK_MECHANISM mech_param = {CKM_EC_KEY_PAIR_GEN, p256, sizeof(p256)};
	CK_MECHANISM_INFO info;
	char label[64];
	CK_KEY_TYPE kt = 0;
	CK_ATTRIBUTE read[] = {{CKA_LABEL, label, sizeof(label)}, {CKA_KEY_TYPE, &kt, sizeof(kt)}};

	if (argc != 2 || !(lib = dlopen(argv[1], RTLD_NOW)) || !(get = (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(lib, "C_GetFunctionList")) ||
	    get(&f) != CKR_OK || f->C_Initialize(NULL) != CKR_OK) {
		fprintf(stderr, "cannot load %s\n", argc > 1 ? argv[1] : "(no module)");
		return 2;
	}
	EXPECT(f->C_OpenSession(1, CKF_SERIAL_SESSION, NULL, NULL, &ro), CKR_OK);
	EXPECT(f->C_OpenSession(1, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &rw), CKR_OK);
	EXPECT(f->C_GetMechanismInfo(1, CKM_EC_EDWARDS_KEY_PAIR_GEN, &info), CKR_OK);
	if (!(info.flags & CKF_GENERATE_KEY_PAIR) || (info.flags & CKF_SIGN)) {
		fprintf(stderr, "FAIL: EC_EDWARDS_KEY_PAIR_GEN flags %#lx\n", info.flags);
		failures++;
	}

	{
		CK_ATTRIBUTE pub[] = {S(CKA_LABEL, "tmpl-ec"), A(CKA_EC_PARAMS, p256)}, priv[] = {A(CKA_SIGN, yes)};
		CK_ATTRIBUTE pub_bad_class[] = {A(CKA_CLASS, priv_class), S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, p256)};
		CK_ATTRIBUTE pub_rsa_type[] = {A(CKA_KEY_TYPE, rsa_type), S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, p256)};
		CK_ATTRIBUTE pub_bits[] = {S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, p256), A(CKA_MODULUS_BITS, bits2048)};
		CK_ATTRIBUTE pub_no_params[] = {S(CKA_LABEL, "tmpl-x")};
		CK_ATTRIBUTE pub_not_der[] = {S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, not_der)};
		CK_ATTRIBUTE pub_sensitive[] = {S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, p256), A(CKA_SENSITIVE, yes)};
		CK_ATTRIBUTE pub_vendor[] = {S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, p256), {CKA_VENDOR_DEFINED | 1, &yes, 1}};
		CK_ATTRIBUTE pub_session[] = {S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, p256), A(CKA_TOKEN, no)};
		CK_ATTRIBUTE pub_subject[] = {S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, p256), S(CKA_SUBJECT, "0")};
		CK_ATTRIBUTE priv_extractable[] = {A(CKA_EXTRACTABLE, yes)};
		CK_ATTRIBUTE priv_other_name[] = {S(CKA_LABEL, "tmpl-y")};
		CK_ATTRIBUTE priv_class_pub[] = {A(CKA_CLASS, pub_class)};
		CK_ATTRIBUTE priv_ok[] = {A(CKA_PRIVATE, yes), A(CKA_SENSITIVE, yes), A(CKA_SIGN, yes), A(CKA_CLASS, priv_class)};

		EXPECT(GEN(ro, CKM_EC_KEY_PAIR_GEN, pub, priv), CKR_SESSION_READ_ONLY);
		EXPECT(GEN(rw, CKM_DSA_KEY_PAIR_GEN, pub, priv), CKR_MECHANISM_INVALID);
		EXPECT(f->C_GenerateKeyPair(rw, &mech_param, pub, 2, priv, 1, &hp, &hk), CKR_MECHANISM_PARAM_INVALID);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_bad_class, priv), CKR_TEMPLATE_INCONSISTENT);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_rsa_type, priv), CKR_TEMPLATE_INCONSISTENT);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_bits, priv), CKR_TEMPLATE_INCONSISTENT);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_no_params, priv), CKR_TEMPLATE_INCOMPLETE);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_not_der, priv), CKR_ATTRIBUTE_VALUE_INVALID);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_sensitive, priv), CKR_ATTRIBUTE_TYPE_INVALID);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_vendor, priv), CKR_ATTRIBUTE_TYPE_INVALID);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_session, priv), CKR_ATTRIBUTE_VALUE_INVALID);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub_subject, priv), CKR_ATTRIBUTE_VALUE_INVALID);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub, priv_extractable), CKR_ATTRIBUTE_VALUE_INVALID);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub, priv_other_name), CKR_TEMPLATE_INCONSISTENT);
		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub, priv_class_pub), CKR_TEMPLATE_INCONSISTENT);
		EXPECT(gen(rw, CKM_EC_KEY_PAIR_GEN, pub, 2, NULL, 1, &hp, &hk), CKR_ARGUMENTS_BAD);

		EXPECT(GEN(rw, CKM_EC_KEY_PAIR_GEN, pub, priv_ok), CKR_OK);
		EXPECT(f->C_GetAttributeValue(rw, hk, read, 2), CKR_OK);
		if (read[0].ulValueLen != 7 || memcmp(label, "tmpl-ec", 7) != 0 || kt != CKK_EC || (hk & 3) != 1 ||
		    (hp & 3) != 2 || (hp >> 2) != (hk >> 2)) {
			fprintf(stderr, "FAIL: tmpl-ec: handles %#lx %#lx, type %lu\n", hp, hk, kt);
			failures++;
		}
		printf("CREATED tmpl-ec\n");
	}
	{
		CK_ATTRIBUTE pub[] = {A(CKA_CLASS, pub_class), A(CKA_KEY_TYPE, rsa_type), A(CKA_MODULUS_BITS, bits2048),
				      A(CKA_PUBLIC_EXPONENT, e65537_padded), A(CKA_VERIFY, yes), A(CKA_ENCRYPT, no)},
			     priv[] = {S(CKA_ID, "tmpl-rsa"), A(CKA_DECRYPT, no)};
		CK_ATTRIBUTE pub_e3[] = {A(CKA_MODULUS_BITS, bits2048), A(CKA_PUBLIC_EXPONENT, e3)};
		CK_ATTRIBUTE pub_params[] = {A(CKA_MODULUS_BITS, bits2048), A(CKA_EC_PARAMS, p256)};
		CK_ATTRIBUTE pub_verify_no[] = {A(CKA_MODULUS_BITS, bits2048), A(CKA_VERIFY, no)};
		CK_ATTRIBUTE pub_no_bits[] = {A(CKA_PUBLIC_EXPONENT, e65537)};

		EXPECT(GEN(rw, CKM_RSA_PKCS_KEY_PAIR_GEN, pub_e3, priv), CKR_ATTRIBUTE_VALUE_INVALID);
		EXPECT(GEN(rw, CKM_RSA_PKCS_KEY_PAIR_GEN, pub_params, priv), CKR_TEMPLATE_INCONSISTENT);
		EXPECT(GEN(rw, CKM_RSA_PKCS_KEY_PAIR_GEN, pub_verify_no, priv), CKR_ATTRIBUTE_VALUE_INVALID);
		EXPECT(GEN(rw, CKM_RSA_PKCS_KEY_PAIR_GEN, pub_no_bits, priv), CKR_TEMPLATE_INCOMPLETE);
		EXPECT(GEN(rw, CKM_RSA_PKCS_KEY_PAIR_GEN, pub, priv), CKR_OK);
		kt = 0;
		read[0].ulValueLen = sizeof(label);
		EXPECT(f->C_GetAttributeValue(rw, hp, read, 2), CKR_OK);
		if (read[0].ulValueLen != 8 || memcmp(label, "tmpl-rsa", 8) != 0 || kt != CKK_RSA) {
			fprintf(stderr, "FAIL: tmpl-rsa: type %lu\n", kt);
			failures++;
		}
		printf("CREATED tmpl-rsa\n");
	}
	{
		CK_ATTRIBUTE pub[] = {S(CKA_LABEL, "tmpl-ed"), A(CKA_EC_PARAMS, ed_printable)}, priv[] = {S(CKA_ID, "tmpl-ed")};
		CK_ATTRIBUTE pub_p256[] = {S(CKA_LABEL, "tmpl-x"), A(CKA_EC_PARAMS, p256)};

		EXPECT(GEN(rw, CKM_EC_EDWARDS_KEY_PAIR_GEN, pub_p256, priv), CKR_CURVE_NOT_SUPPORTED);
		EXPECT(GEN(rw, CKM_EC_EDWARDS_KEY_PAIR_GEN, pub, priv), CKR_OK);
		printf("CREATED tmpl-ed\n");
	}
	f->C_Finalize(NULL);
	if (failures)
		fprintf(stderr, "gen_template: %d checks failed\n", failures);
	return failures != 0;
}
