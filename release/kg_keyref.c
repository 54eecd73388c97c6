/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_keyref.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "kg_uuid.h"

#define KG_KEYREF_MAX_FILE (64 * 1024)

typedef struct kg_keyref_asn1 {
    ASN1_INTEGER *version;
    ASN1_UTF8STRING *key_id;
    X509_PUBKEY *public_key;
    ASN1_UTF8STRING *kbs_url;
    ASN1_UTF8STRING *kbs_type;
    ASN1_UTF8STRING *description;
} KG_KEYREF_ASN1;

ASN1_SEQUENCE(KG_KEYREF_ASN1) =
    {
        ASN1_SIMPLE(KG_KEYREF_ASN1, version, ASN1_INTEGER),
        ASN1_SIMPLE(KG_KEYREF_ASN1, key_id, ASN1_UTF8STRING),
        ASN1_SIMPLE(KG_KEYREF_ASN1, public_key, X509_PUBKEY),
        ASN1_IMP_OPT(KG_KEYREF_ASN1, kbs_url, ASN1_UTF8STRING, 0),
        ASN1_IMP_OPT(KG_KEYREF_ASN1, kbs_type, ASN1_UTF8STRING, 1),
        ASN1_IMP_OPT(KG_KEYREF_ASN1, description, ASN1_UTF8STRING, 2),
} ASN1_SEQUENCE_END(KG_KEYREF_ASN1)

        void kg_keyref_clear(kg_keyref * ref)
{
    if (ref == NULL)
        return;
    EVP_PKEY_free(ref->pubkey);
    free(ref->spki_der);
    memset(ref, 0, sizeof(*ref));
}

/* repo/type/tag, each segment [A-Za-z0-9._-]+ but never "." or ".." (it becomes a URL path) */
static int is_resource_path(const char *s)
{
    int slashes = 0;
    size_t seg = 0, dots = 0;

    for (;; s++) {
        if (*s == '/' || *s == '\0') {
            if (seg == 0 || seg == dots)
                return 0;
            if (*s == '\0')
                return slashes == 2;
            slashes++;
            seg = dots = 0;
        } else if (isalnum((unsigned char)*s) || *s == '.' || *s == '_' || *s == '-') {
            seg++;
            dots += *s == '.';
        } else {
            return 0;
        }
    }
}

int kg_keyref_key_id_ok(const char *key_id, const char *kbs_type)
{
    if (kbs_type != NULL && strcmp(kbs_type, "trustee") == 0)
        return is_resource_path(key_id);
    return kg_uuid_is_v4(key_id);
}

/* Copies a UTF8String into dst if printable ASCII and short enough. */
static int copy_text(const ASN1_UTF8STRING *s, char *dst, size_t size)
{
    int len = ASN1_STRING_length(s);
    const unsigned char *p = ASN1_STRING_get0_data(s);

    if (len <= 0 || (size_t)len >= size)
        return 0;
    for (int i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return 0;
    memcpy(dst, p, (size_t)len);
    dst[len] = '\0';
    return 1;
}

/* Only the algorithms keygate can serve: RSA 2048..4096, EC P-256/P-384. */
static int key_supported(const EVP_PKEY *pk, char *why, size_t why_len)
{
    char group[32] = "";

    if (EVP_PKEY_is_a(pk, "RSA")) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits >= 2048 && bits <= 4096)
            return 1;
        snprintf(why, why_len, "RSA-%d (keygate serves RSA 2048..4096)", bits);
        return 0;
    }
    if (EVP_PKEY_is_a(pk, "EC") &&
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) &&
        (strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0))
        return 1;
    snprintf(why, why_len, "%s%s%s (keygate serves RSA and EC P-256/P-384)", EVP_PKEY_get0_type_name(pk),
             group[0] ? " " : "", group);
    return 0;
}

static int set_spki(kg_keyref *ref, const uint8_t *spki, size_t spki_len, kg_err *err)
{
    const unsigned char *p = spki;
    char why[128];
    EVP_PKEY *pk = d2i_PUBKEY_ex(NULL, &p, (long)spki_len, kg_libctx(), NULL);

    if (pk == NULL || p != spki + spki_len)
        goto bad;
    if (!key_supported(pk, why, sizeof(why))) {
        EVP_PKEY_free(pk);
        return kg_err_set(err, KG_STEP_CONFIG, "key reference: public key is %s", why);
    }
    if ((ref->spki_der = malloc(spki_len)) == NULL) {
        EVP_PKEY_free(pk);
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    }
    memcpy(ref->spki_der, spki, spki_len);
    ref->spki_der_len = spki_len;
    ref->pubkey = pk;
    return 1;
bad:
    EVP_PKEY_free(pk);
    return kg_err_set(err, KG_STEP_CONFIG, "key reference: publicKey is not a SubjectPublicKeyInfo");
}

int kg_keyref_from_der(const uint8_t *der, size_t len, kg_keyref *ref, kg_err *err)
{
    const unsigned char *p = der;
    KG_KEYREF_ASN1 *a = NULL;
    unsigned char *spki = NULL;
    int64_t version = 0;
    int spki_len, ok = 0;

    memset(ref, 0, sizeof(*ref));
    if (len == 0 || len > KG_KEYREF_MAX_DER)
        return kg_err_set(err, KG_STEP_CONFIG, "key reference: DER of %zu bytes (1..%d expected)", len,
                          KG_KEYREF_MAX_DER);
    a = (KG_KEYREF_ASN1 *)ASN1_item_d2i(NULL, &p, (long)len, ASN1_ITEM_rptr(KG_KEYREF_ASN1));
    if (a == NULL || p != der + len) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: not a KeygateKeyReference DER structure%s",
                   a != NULL ? " (trailing bytes)" : "");
        goto err;
    }
    if (!ASN1_INTEGER_get_int64(&version, a->version) || version != KG_KEYREF_VERSION) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: version %lld is not supported (expected %d)",
                   (long long)version, KG_KEYREF_VERSION);
        goto err;
    }
    if (!copy_text(a->key_id, ref->key_id, sizeof(ref->key_id))) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: keyId is empty, too long or not printable");
        goto err;
    }
    if (a->kbs_type != NULL &&
        (!copy_text(a->kbs_type, ref->kbs_type, sizeof(ref->kbs_type)) ||
         (strcmp(ref->kbs_type, "intel") != 0 && strcmp(ref->kbs_type, "trustee") != 0))) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: kbsType must be intel or trustee");
        goto err;
    }
    if (a->kbs_url != NULL &&
        (!copy_text(a->kbs_url, ref->kbs_url, sizeof(ref->kbs_url)) ||
         (strncmp(ref->kbs_url, "https://", 8) != 0 && strncmp(ref->kbs_url, "http://", 7) != 0))) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: kbsUrl is not an http(s) URL");
        goto err;
    }
    if (a->description != NULL && !copy_text(a->description, ref->description, sizeof(ref->description))) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: description is too long or not printable");
        goto err;
    }
    if (!kg_keyref_key_id_ok(ref->key_id, ref->kbs_type[0] ? ref->kbs_type : NULL) &&
        !kg_keyref_key_id_ok(ref->key_id, "trustee")) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: keyId '%s' is neither a UUID nor repo/type/tag",
                   ref->key_id);
        goto err;
    }
    if ((spki_len = i2d_X509_PUBKEY(a->public_key, &spki)) <= 0) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: publicKey is not a SubjectPublicKeyInfo");
        goto err;
    }
    if (!set_spki(ref, spki, (size_t)spki_len, err))
        goto err;
    ok = 1;
err:
    OPENSSL_free(spki);
    ASN1_item_free((ASN1_VALUE *)a, ASN1_ITEM_rptr(KG_KEYREF_ASN1));
    if (!ok) {
        kg_keyref_clear(ref);
        ERR_clear_error(); /* the d2i's reasons are in err->msg's words; the caller's queue stays clean */
    }
    return ok;
}

int kg_keyref_from_pem(const char *pem, size_t len, kg_keyref *ref, kg_err *err)
{
    BIO *bio;
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long dlen = 0;
    int found = 0, ok = 0;

    memset(ref, 0, sizeof(*ref));
    if (len > KG_KEYREF_MAX_FILE)
        return kg_err_set(err, KG_STEP_CONFIG, "key reference: file larger than %d bytes",
                          KG_KEYREF_MAX_FILE);
    if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    while (PEM_read_bio(bio, &name, &header, &data, &dlen)) {
        if (strcmp(name, KG_KEYREF_PEM_LABEL) == 0) {
            if (found++) {
                kg_err_set(err, KG_STEP_CONFIG, "key reference: more than one %s block", KG_KEYREF_PEM_LABEL);
                goto err;
            }
            if (header != NULL && header[0] != '\0') {
                kg_err_set(err, KG_STEP_CONFIG, "key reference: PEM headers are not allowed");
                goto err;
            }
            if (!kg_keyref_from_der(data, (size_t)dlen, ref, err))
                goto err;
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        name = header = NULL;
        data = NULL;
    }
    ERR_clear_error(); /* PEM_read_bio's "no start line" at the end */
    if (!found) {
        kg_err_set(err, KG_STEP_CONFIG, "key reference: no %s block", KG_KEYREF_PEM_LABEL);
        goto err;
    }
    ok = 1;
err:
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    BIO_free(bio);
    if (!ok)
        kg_keyref_clear(ref);
    return ok;
}

int kg_keyref_load(const char *path, kg_keyref *ref, kg_err *err)
{
    FILE *fp = fopen(path, "rbe");
    char *buf = NULL;
    size_t n;
    kg_err e;
    int ok;

    memset(ref, 0, sizeof(*ref));
    if (fp == NULL)
        return kg_err_set(err, KG_STEP_CONFIG, "key reference %s: %s", path, strerror(errno));
    if ((buf = malloc(KG_KEYREF_MAX_FILE + 1)) == NULL) {
        fclose(fp);
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    }
    n = fread(buf, 1, KG_KEYREF_MAX_FILE + 1, fp);
    fclose(fp);
    ok = kg_keyref_from_pem(buf, n, ref, &e);
    free(buf);
    if (!ok) /* e.msg is "config: key reference: <why>" */
        return kg_err_set(err, e.step, "key reference %s: %s", path,
                          e.msg + strlen("config: key reference: "));
    return 1;
}

int kg_keyref_set_pubkey(kg_keyref *ref, const EVP_PKEY *key, kg_err *err)
{
    unsigned char *spki = NULL;
    int len = i2d_PUBKEY(key, &spki), ok;

    if (len <= 0)
        return kg_err_set(err, KG_STEP_INTERNAL, "cannot encode the public key");
    EVP_PKEY_free(ref->pubkey);
    free(ref->spki_der);
    ref->pubkey = NULL;
    ref->spki_der = NULL;
    ok = set_spki(ref, spki, (size_t)len, err);
    OPENSSL_free(spki);
    return ok;
}

static int set_utf8(ASN1_UTF8STRING **dst, const char *s)
{
    if (s == NULL || s[0] == '\0')
        return 1;
    return (*dst = ASN1_UTF8STRING_new()) != NULL && ASN1_STRING_set(*dst, s, (int)strlen(s));
}

int kg_keyref_to_der(const kg_keyref *ref, uint8_t **der, size_t *len, kg_err *err)
{
    KG_KEYREF_ASN1 *a = (KG_KEYREF_ASN1 *)ASN1_item_new(ASN1_ITEM_rptr(KG_KEYREF_ASN1));
    const unsigned char *p;
    unsigned char *out = NULL;
    int n, ok = 0;

    *der = NULL;
    *len = 0;
    if (a == NULL || ref->spki_der == NULL)
        goto err;
    p = ref->spki_der;
    X509_PUBKEY_free(a->public_key);
    if ((a->public_key = d2i_X509_PUBKEY(NULL, &p, (long)ref->spki_der_len)) == NULL ||
        !ASN1_INTEGER_set(a->version, KG_KEYREF_VERSION) || !ASN1_STRING_set(a->key_id, ref->key_id, -1) ||
        !set_utf8(&a->kbs_url, ref->kbs_url) || !set_utf8(&a->kbs_type, ref->kbs_type) ||
        !set_utf8(&a->description, ref->description))
        goto err;
    if ((n = ASN1_item_i2d((ASN1_VALUE *)a, &out, ASN1_ITEM_rptr(KG_KEYREF_ASN1))) <= 0)
        goto err;
    if ((*der = malloc((size_t)n)) == NULL)
        goto err;
    memcpy(*der, out, (size_t)n);
    *len = (size_t)n;
    ok = 1;
err:
    OPENSSL_free(out);
    ASN1_item_free((ASN1_VALUE *)a, ASN1_ITEM_rptr(KG_KEYREF_ASN1));
    return ok ? 1 : kg_err_set(err, KG_STEP_INTERNAL, "cannot encode the key reference");
}

int kg_keyref_to_pem(const kg_keyref *ref, char **pem, kg_err *err)
{
    uint8_t *der = NULL;
    size_t der_len = 0;
    BIO *bio = NULL;
    BUF_MEM *mem;
    int ok = 0;

    *pem = NULL;
    if (!kg_keyref_to_der(ref, &der, &der_len, err))
        return 0;
    if ((bio = BIO_new(BIO_s_mem())) == NULL ||
        !PEM_write_bio(bio, KG_KEYREF_PEM_LABEL, "", der, (long)der_len) || BIO_get_mem_ptr(bio, &mem) <= 0 ||
        (*pem = malloc(mem->length + 1)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "cannot write the key reference PEM");
        goto err;
    }
    memcpy(*pem, mem->data, mem->length);
    (*pem)[mem->length] = '\0';
    ok = 1;
err:
    BIO_free(bio);
    free(der);
    return ok;
}
