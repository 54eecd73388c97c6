/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The token's contents: keygate.conf -> one kg_p11_key per entry of pkcs11_keys
 * ("LABEL:REFERENCE_FILE[:CERTIFICATE_FILE]", comma-separated). Everything here is public
 * (the reference's public key, the certificate) and local: no network, no attestation.
 *
 * Configuration lookup: pReserved of C_Initialize (p11-kit's x-init-reserved, "config=/PATH" or a
 * bare /PATH, checked in p11_module.c), else $KEYGATE_CONF, else /etc/keygate/keygate.conf if it exists, else
 * an empty token. The token serial is derived from kbs_url so it is the same on every TD of a fleet and
 * across restarts.
 */
#define _GNU_SOURCE /* secure_getenv */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kg_libctx.h"
#include "kg_log.h"
#include "p11.h"

#define KG_P11_DEFAULT_CONF "/etc/keygate/keygate.conf"

static void key_clear(kg_p11_key *k)
{
    kg_keyref_clear(&k->ref);
    free(k->modulus);
    free(k->exponent);
    free(k->ec_params);
    free(k->ec_point);
    free(k->cert);
    free(k->subject);
    free(k->issuer);
    free(k->serial);
    memset(k, 0, sizeof(*k));
}

void kg_p11_token_free(kg_p11_token *token)
{
    if (token == NULL)
        return;
    /* first: stops (and joins) every lease refresh, then frees the keys (zeroized) */
    kg_keysource_free(token->keys_src);
    for (size_t i = 0; i < token->nkeys; i++)
        key_clear(&token->keys[i]);
    free(token->keys);
    OPENSSL_secure_clear_free(token->pin, KG_P11_PIN_MAX + 1);
    OPENSSL_cleanse(&token->cfg, sizeof(token->cfg));
    free(token);
}

static int dup_bn(EVP_PKEY *pk, const char *name, unsigned char **out, size_t *len)
{
    BIGNUM *bn = NULL;
    int ok = 0;

    if (!EVP_PKEY_get_bn_param(pk, name, &bn))
        return 0;
    *len = (size_t)BN_num_bytes(bn);
    if ((*out = malloc(*len ? *len : 1)) != NULL) {
        BN_bn2bin(bn, *out);
        ok = 1;
    }
    BN_free(bn);
    return ok;
}

/* i2d into a fresh malloc'ed buffer. */
#define DER_OF(fn, obj, out, len)                                                                            \
    do {                                                                                                     \
        int n_ = fn((obj), NULL);                                                                            \
        unsigned char *p_;                                                                                   \
        if (n_ <= 0 || ((out) = malloc((size_t)n_)) == NULL)                                                 \
            goto err;                                                                                        \
        p_ = (out);                                                                                          \
        (len) = (size_t)fn((obj), &p_);                                                                      \
    } while (0)

/* Public attributes of the reference's key: modulus/exponent or EC params/point, and CKA_ID. */
static int key_public_attrs(kg_p11_key *k, kg_err *err)
{
    EVP_PKEY *pk = k->ref.pubkey;
    const unsigned char *p = k->ref.spki_der, *bits;
    X509_PUBKEY *xpk = NULL;
    ASN1_OCTET_STRING *os = NULL;
    ASN1_OBJECT *oid = NULL;
    unsigned char point[200];
    size_t point_len = 0;
    int bits_len, ok = 0;

    if (EVP_PKEY_is_a(pk, "RSA")) {
        k->type = KG_P11_RSA;
        if (!dup_bn(pk, OSSL_PKEY_PARAM_RSA_N, &k->modulus, &k->modulus_len) ||
            !dup_bn(pk, OSSL_PKEY_PARAM_RSA_E, &k->exponent, &k->exponent_len))
            goto err;
        k->modulus_bits = (CK_ULONG)EVP_PKEY_get_bits(pk);
    } else if (EVP_PKEY_is_a(pk, "EC")) {
        k->type = KG_P11_EC;
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, k->group, sizeof(k->group), NULL))
            goto err;
        if ((oid = OBJ_txt2obj(k->group, 0)) == NULL || OBJ_obj2nid(oid) == NID_undef) {
            kg_err_set(err, KG_STEP_CONFIG, "%s: EC group %s has no OID", k->ref_path, k->group);
            goto fail;
        }
        DER_OF(i2d_ASN1_OBJECT, oid, k->ec_params, k->ec_params_len);
        if (!EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point), &point_len) ||
            (os = ASN1_OCTET_STRING_new()) == NULL || !ASN1_OCTET_STRING_set(os, point, (int)point_len))
            goto err;
        DER_OF(i2d_ASN1_OCTET_STRING, os, k->ec_point, k->ec_point_len);
        k->field_len = (size_t)(EVP_PKEY_get_bits(pk) + 7) / 8;
    } else {
        kg_err_set(err, KG_STEP_CONFIG, "%s: only RSA and EC keys are supported", k->ref_path);
        goto fail;
    }
    /* CKA_ID = SHA-1 of the subjectPublicKey bits, as X.509 subject key identifiers usually are */
    if ((xpk = d2i_X509_PUBKEY(NULL, &p, (long)k->ref.spki_der_len)) == NULL ||
        !X509_PUBKEY_get0_param(NULL, &bits, &bits_len, NULL, xpk) ||
        !EVP_Q_digest(kg_libctx(), "SHA1", NULL, bits, (size_t)bits_len, k->id, NULL))
        goto err;
    ok = 1;
    goto done;
err:
    kg_err_set(err, KG_STEP_CONFIG, "%s: cannot encode the public key attributes", k->ref_path);
fail:
done:
    X509_PUBKEY_free(xpk);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(oid);
    return ok;
}

/* Reads a PEM or DER certificate and checks that it certifies the reference's public key. */
static int key_load_cert(kg_p11_key *k, const char *path, kg_err *err)
{
    BIO *bio = BIO_new_file(path, "rb");
    X509 *x = NULL;
    unsigned char *der = NULL, *spki = NULL;
    long der_len = 0;
    char *name = NULL, *header = NULL;
    const unsigned char *p;
    size_t spki_len = 0;
    int ok = 0;

    if (bio == NULL) {
        kg_err_set(err, KG_STEP_CONFIG, "%s: cannot open certificate", path);
        goto done;
    }
    if (PEM_read_bio(bio, &name, &header, &der, &der_len) != 1 || strcmp(name, "CERTIFICATE") != 0) {
        /* not PEM: try DER */
        OPENSSL_free(der);
        der = NULL;
        (void)BIO_reset(bio);
        der_len = 0;
        unsigned char buf[16384];
        int n = BIO_read(bio, buf, sizeof(buf));
        if (n > 0 && (der = OPENSSL_malloc((size_t)n)) != NULL) {
            memcpy(der, buf, (size_t)n);
            der_len = n;
        }
    }
    p = der;
    if (der == NULL || (x = X509_new_ex(kg_libctx(), NULL)) == NULL || d2i_X509(&x, &p, der_len) == NULL) {
        kg_err_set(err, KG_STEP_CONFIG, "%s: not a PEM or DER X.509 certificate", path);
        goto done;
    }
    DER_OF(i2d_X509_PUBKEY, X509_get_X509_PUBKEY(x), spki, spki_len);
    if (spki_len != k->ref.spki_der_len || memcmp(spki, k->ref.spki_der, spki_len) != 0) {
        kg_err_set(err, KG_STEP_CONFIG, "%s: the certificate's public key is not the one of %s", path,
                   k->ref_path);
        goto done;
    }
    DER_OF(i2d_X509, x, k->cert, k->cert_len);
    DER_OF(i2d_X509_NAME, X509_get_subject_name(x), k->subject, k->subject_len);
    DER_OF(i2d_X509_NAME, X509_get_issuer_name(x), k->issuer, k->issuer_len);
    DER_OF(i2d_ASN1_INTEGER, X509_get0_serialNumber(x), k->serial, k->serial_len);
    ok = 1;
    goto done;
err:
    kg_err_set(err, KG_STEP_CONFIG, "%s: cannot encode the certificate attributes", path);
done:
    free(spki);
    X509_free(x);
    OPENSSL_free(der);
    OPENSSL_free(name);
    OPENSSL_free(header);
    BIO_free(bio);
    return ok;
}

static char *trim(char *s)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* One "LABEL:REFERENCE[:CERTIFICATE]" item. */
static int key_load(kg_p11_token *t, char *item, kg_err *err)
{
    char *label = trim(item), *ref, *cert;
    kg_p11_key *k;

    if ((ref = strchr(label, ':')) == NULL)
        return kg_err_set(err, KG_STEP_CONFIG, "pkcs11_keys: '%.64s' is not LABEL:REFERENCE[:CERTIFICATE]",
                          label);
    *ref++ = '\0';
    if ((cert = strchr(ref, ':')) != NULL)
        *cert++ = '\0';
    label = trim(label);
    ref = trim(ref);
    if (*label == '\0' || strlen(label) >= KG_P11_LABEL_MAX || *ref == '\0')
        return kg_err_set(err, KG_STEP_CONFIG, "pkcs11_keys: empty or too long label/reference in '%.64s'",
                          label);
    for (size_t i = 0; i < t->nkeys; i++)
        if (strcmp(t->keys[i].label, label) == 0)
            return kg_err_set(err, KG_STEP_CONFIG, "pkcs11_keys: label '%s' is used twice", label);
    if (t->nkeys == KG_P11_MAX_KEYS)
        return kg_err_set(err, KG_STEP_CONFIG, "pkcs11_keys: more than %d keys", KG_P11_MAX_KEYS);
    k = &t->keys[t->nkeys];
    memset(k, 0, sizeof(*k));
    snprintf(k->label, sizeof(k->label), "%s", label);
    snprintf(k->ref_path, sizeof(k->ref_path), "%s", ref);
    if (!kg_keyref_load(ref, &k->ref, err))
        return 0;
    t->nkeys++; /* from here key_clear frees it with the token */
    if (!key_public_attrs(k, err))
        return 0;
    if (cert != NULL && *trim(cert) != '\0' && !key_load_cert(k, trim(cert), err))
        return 0;
    return 1;
}

/* Reads pkcs11_pin_file into t->pin (secure heap, zero-padded to KG_P11_PIN_MAX bytes: the
 * comparison in C_Login always runs over the whole buffer). Like the ITA API key file: a regular
 * file, no symlink, not readable by group or others, one line (trailing CR/LF stripped). The
 * messages name the file, never its content. */
static int pin_load(kg_p11_token *t, const char *path, kg_err *err)
{
    unsigned char *buf = NULL;
    struct stat st;
    ssize_t n;
    size_t len;
    int fd, ok = 0;

    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
        return kg_err_set(err, KG_STEP_CONFIG, "pkcs11_pin_file %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        kg_err_set(err, KG_STEP_CONFIG, "pkcs11_pin_file %s: not a regular file", path);
        goto done;
    }
    if ((st.st_mode & 077) != 0) {
        kg_err_set(err, KG_STEP_CONFIG,
                   "pkcs11_pin_file %s: readable by group or others (mode %03o); chmod 600 it", path,
                   (unsigned)(st.st_mode & 0777));
        goto done;
    }
    /* one byte more than a PIN may have, to tell "too long"; zeroed: the padding */
    if ((buf = OPENSSL_secure_zalloc(KG_P11_PIN_MAX + 1)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto done;
    }
    n = read(fd, buf, KG_P11_PIN_MAX + 1);
    len = n > 0 ? (size_t)n : 0;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        buf[--len] = '\0';
    if (n < 0 || len > KG_P11_PIN_MAX) {
        kg_err_set(err, KG_STEP_CONFIG, "pkcs11_pin_file %s: unreadable or longer than %d bytes", path,
                   KG_P11_PIN_MAX);
        goto done;
    }
    if (len == 0 || memchr(buf, '\n', len) != NULL || memchr(buf, '\r', len) != NULL) {
        kg_err_set(err, KG_STEP_CONFIG, "pkcs11_pin_file %s: empty or not one line", path);
        goto done;
    }
    t->pin = buf;
    t->pin_len = len;
    buf = NULL;
    ok = 1;
done:
    OPENSSL_secure_clear_free(buf, KG_P11_PIN_MAX + 1);
    close(fd);
    return ok;
}

static const char *conf_path_of(const char *reserved)
{
    const char *env;

    if (reserved != NULL) {
        while (isspace((unsigned char)*reserved))
            reserved++;
        if (strncmp(reserved, "config=", 7) == 0)
            reserved += 7;
        if (*reserved != '\0')
            return reserved;
    }
    /* not from the environment of a setuid/setgid host (p11-kit loads us into every GnuTLS
     * program): KEYGATE_CONF chooses the trust anchor, the ITA URL and the API key file */
    if ((env = secure_getenv("KEYGATE_CONF")) != NULL && *env != '\0')
        return env;
    return access(KG_P11_DEFAULT_CONF, F_OK) == 0 ? KG_P11_DEFAULT_CONF : NULL;
}

static CK_RV token_load(const char *reserved, kg_p11_token **out)
{
    kg_p11_token *t = calloc(1, sizeof(*t));
    const char *path = conf_path_of(reserved);
    unsigned char digest[32];
    char list[sizeof(t->cfg.pkcs11_keys)], *save = NULL, *item;
    kg_err err;

    kg_err_clear(&err);
    if (t == NULL || (t->keys = calloc(KG_P11_MAX_KEYS, sizeof(*t->keys))) == NULL) {
        kg_p11_token_free(t);
        return CKR_HOST_MEMORY;
    }
    kg_config_defaults(&t->cfg);
    if (path != NULL) {
        snprintf(t->conf_path, sizeof(t->conf_path), "%s", path);
        if (!kg_config_load_file(&t->cfg, t->conf_path, &err) || !kg_config_check(&t->cfg, &err))
            goto fail;
    }
    t->release_on_login = strcmp(t->cfg.pkcs11_release, "login") == 0;
    if (t->cfg.pkcs11_pin_file[0] != '\0' && !pin_load(t, t->cfg.pkcs11_pin_file, &err))
        goto fail;
    t->login_required = t->release_on_login || t->pin != NULL;
    kg_log_set_default_level(t->cfg.log_level);
    snprintf(list, sizeof(list), "%s", t->cfg.pkcs11_keys);
    for (item = strtok_r(list, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
        if (*trim(item) != '\0' && !key_load(t, item, &err))
            goto fail;
    if (!EVP_Q_digest(kg_libctx(), "SHA256", NULL, t->cfg.kbs_url, strlen(t->cfg.kbs_url), digest, NULL))
        goto fail;
    for (int i = 0; i < 8; i++)
        snprintf(t->serial + 2 * i, 3, "%02x", digest[i]);
    /* one slot per key; the release context reads the API key now, when this process may (root
     * at start-up). No network. */
    if (t->nkeys > 0) {
        if ((t->keys_src = kg_keysource_new(&t->cfg, &err)) == NULL)
            goto fail;
        for (size_t i = 0; i < t->nkeys; i++)
            if ((t->keys[i].slot = kg_keysource_slot(t->keys_src, &t->keys[i].ref, &err)) == NULL)
                goto fail;
    }
    if (t->nkeys == 0)
        KG_DEBUG("PKCS#11: %s lists no pkcs11_keys: the token is empty", path ? path : "no keygate.conf");
    *out = t;
    return CKR_OK;
fail:
    KG_LOG(KG_LOG_ERROR, "PKCS#11 C_Initialize: %s", err.msg[0] ? err.msg : "out of memory");
    kg_p11_token_free(t);
    return CKR_FUNCTION_FAILED;
}

CK_RV kg_p11_token_load(const char *reserved, kg_p11_token **out)
{
    CK_RV rv;

    /* whatever fails here (a PEM probe, a bad file) stays out of the host's error queue */
    ERR_set_mark();
    rv = token_load(reserved, out);
    ERR_pop_to_mark();
    return rv;
}
