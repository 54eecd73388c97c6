/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encoders for keygate keys (docs/protocols/openssl-provider.md §1 rule 4): SubjectPublicKeyInfo as DER
 * and PEM, and text. They let `openssl pkey -pubout`, `-text`, `req -new -x509` and certificate
 * matching work without exporting the key. The public key comes from the reference
 * (key->ref.pubkey), so none of them needs an attestation.
 *
 * Algorithm table entries for provider.c (OSSL_OP_ENCODER), names = our keymgmt names:
 *
 *   {"RSA:rsaEncryption", "provider=keygate,output=der,structure=SubjectPublicKeyInfo",
 *    kg_rsa_spki_der_encoder_functions},
 *   {"RSA:rsaEncryption", "provider=keygate,output=pem,structure=SubjectPublicKeyInfo",
 *    kg_rsa_spki_pem_encoder_functions},
 *   {"RSA:rsaEncryption", "provider=keygate,output=text", kg_rsa_text_encoder_functions},
 *   {"EC:id-ecPublicKey", "provider=keygate,output=der,structure=SubjectPublicKeyInfo",
 *    kg_ec_spki_der_encoder_functions},
 *   {"EC:id-ecPublicKey", "provider=keygate,output=pem,structure=SubjectPublicKeyInfo",
 *    kg_ec_spki_pem_encoder_functions},
 *   {"EC:id-ecPublicKey", "provider=keygate,output=text", kg_ec_text_encoder_functions},
 *
 * (The names must equal the keymgmt's names: libcrypto matches encoders to a key by the
 * names of its keymgmt.)
 *
 * No OSSL_FUNC_ENCODER_IMPORT_OBJECT on purpose: libcrypto only offers an encoder a key of
 * another provider's keymgmt when the encoder can import it, so without import_object these
 * encoders are never used for non-keygate keys (coexistence, openssl-provider.md §5).
 */
#include <openssl/bio.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>

#include "provider.h"

typedef enum kg_enc_output { KG_ENC_DER, KG_ENC_PEM, KG_ENC_TEXT } kg_enc_output;

typedef struct kg_encoder_ctx {
    kg_provctx *provctx;
} kg_encoder_ctx;

static OSSL_FUNC_encoder_newctx_fn kg_encoder_newctx;
static OSSL_FUNC_encoder_freectx_fn kg_encoder_freectx;
static OSSL_FUNC_encoder_does_selection_fn kg_spki_does_selection, kg_text_does_selection;
static OSSL_FUNC_encoder_encode_fn kg_spki_der_encode, kg_spki_pem_encode, kg_text_encode;

static void *kg_encoder_newctx(void *provctx)
{
    kg_encoder_ctx *ctx = calloc(1, sizeof(*ctx));

    if (ctx != NULL)
        ctx->provctx = provctx;
    return ctx;
}

static void kg_encoder_freectx(void *vctx)
{
    free(vctx);
}

/* SPKI carries a public key: any selection asking for it (KEYPAIR too, so that an attempt to
 * write the private key through us is refused with our message instead of a generic one). */
static int kg_spki_does_selection(void *provctx, int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0;
}

/* `openssl pkey -text` asks for KEYPAIR; we print only the public part, so accept both. */
static int kg_text_does_selection(void *provctx, int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
}

/* Our key object, or NULL. libcrypto passes obj_raw only for keys of our own keymgmt (we have
 * no import_object); the magic check guards against anything else. */
static const kg_key *encoder_key(const void *obj_raw)
{
    const kg_key *key = kg_key_cast((void *)obj_raw, 0);

    return key != NULL && key->ref.pubkey != NULL ? key : NULL;
}

/* Writes the text form: one line naming the keygate key, then what OpenSSL prints for the
 * public key. Built in a memory BIO so that a failure writes nothing to the output. */
static int write_text(BIO *out, const kg_key *key)
{
    BIO *mem = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;
    int ok = 0;

    if (mem == NULL)
        goto err;
    if (key->has_ref) {
        if (BIO_printf(mem, "keygate attested key %s (private part held by keygate, never exported)\n",
                       key->ref.key_id) <= 0)
            goto err;
    } else if (BIO_printf(mem, "keygate public key (no key id, no private part)\n") <= 0) {
        goto err;
    }
    /* ref.pubkey lives in kg_libctx(): printing runs the default provider's text encoder there */
    if (EVP_PKEY_print_public(mem, key->ref.pubkey, 0, NULL) <= 0)
        goto err;
    len = BIO_get_mem_data(mem, &data);
    if (len <= 0 || BIO_write(out, data, (int)len) != (int)len)
        goto err;
    ok = 1;
err:
    BIO_free(mem);
    return ok;
}

static int encode(kg_encoder_ctx *ctx, OSSL_CORE_BIO *cout, const void *obj_raw, int selection,
                  kg_enc_output output)
{
    const kg_key *key = encoder_key(obj_raw);
    BIO *out = NULL;
    int ok = 0;

    if (key == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate encoder: not a keygate key object");
        return 0;
    }
    /* SPKI cannot carry a private key; never fall back to writing anything else */
    if (output != KG_ENC_TEXT && (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
        KG_PROV_ERROR(ctx->provctx, KG_R_EXPORT_REFUSED,
                      "private key export refused: keygate keys never leave the provider");
        return 0;
    }
    if ((out = BIO_new_from_core_bio(ctx->provctx->corelibctx, cout)) == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate encoder: cannot open the output");
        return 0;
    }
    switch (output) {
    case KG_ENC_DER: ok = i2d_PUBKEY_bio(out, key->ref.pubkey) > 0; break;
    case KG_ENC_PEM: ok = PEM_write_bio_PUBKEY(out, key->ref.pubkey) > 0; break;
    case KG_ENC_TEXT: ok = write_text(out, key); break;
    }
    if (!ok)
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate encoder: writing the public key failed");
    BIO_free(out);
    return ok;
}

static int kg_spki_der_encode(void *vctx, OSSL_CORE_BIO *cout, const void *obj_raw,
                              const OSSL_PARAM obj_abstract[], int selection, OSSL_PASSPHRASE_CALLBACK *cb,
                              void *cbarg)
{
    return encode(vctx, cout, obj_raw, selection, KG_ENC_DER);
}

static int kg_spki_pem_encode(void *vctx, OSSL_CORE_BIO *cout, const void *obj_raw,
                              const OSSL_PARAM obj_abstract[], int selection, OSSL_PASSPHRASE_CALLBACK *cb,
                              void *cbarg)
{
    return encode(vctx, cout, obj_raw, selection, KG_ENC_PEM);
}

static int kg_text_encode(void *vctx, OSSL_CORE_BIO *cout, const void *obj_raw,
                          const OSSL_PARAM obj_abstract[], int selection, OSSL_PASSPHRASE_CALLBACK *cb,
                          void *cbarg)
{
    return encode(vctx, cout, obj_raw, selection, KG_ENC_TEXT);
}

#define KG_ENCODER_FUNCTIONS(name, does_selection, encode_fn)                                                \
    const OSSL_DISPATCH name[] = {{OSSL_FUNC_ENCODER_NEWCTX, (void (*)(void))kg_encoder_newctx},             \
                                  {OSSL_FUNC_ENCODER_FREECTX, (void (*)(void))kg_encoder_freectx},           \
                                  {OSSL_FUNC_ENCODER_DOES_SELECTION, (void (*)(void))does_selection},        \
                                  {OSSL_FUNC_ENCODER_ENCODE, (void (*)(void))encode_fn},                     \
                                  {0, NULL}};

/* The RSA and EC tables are identical: the key object knows its own type. They exist separately
 * because the algorithm table binds each to its key type's names. */
KG_ENCODER_FUNCTIONS(kg_rsa_spki_der_encoder_functions, kg_spki_does_selection, kg_spki_der_encode)
KG_ENCODER_FUNCTIONS(kg_rsa_spki_pem_encoder_functions, kg_spki_does_selection, kg_spki_pem_encode)
KG_ENCODER_FUNCTIONS(kg_rsa_text_encoder_functions, kg_text_does_selection, kg_text_encode)
KG_ENCODER_FUNCTIONS(kg_ec_spki_der_encoder_functions, kg_spki_does_selection, kg_spki_der_encode)
KG_ENCODER_FUNCTIONS(kg_ec_spki_pem_encoder_functions, kg_spki_does_selection, kg_spki_pem_encode)
KG_ENCODER_FUNCTIONS(kg_ec_text_encoder_functions, kg_text_does_selection, kg_text_encode)
