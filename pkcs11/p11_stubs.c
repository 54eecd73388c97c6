/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The complete PKCS#11 2.40 function list, and the functions a token of released keys does not
 * offer. Every slot is a valid function (wrappers call through the table without NULL checks).
 * Unsupported calls answer CKR_FUNCTION_NOT_SUPPORTED once the library is initialised (and
 * CKR_CRYPTOKI_NOT_INITIALIZED before, as every call must).
 */
#include "p11.h"

#define KG_P11_UNSUPPORTED() return kg_p11_ready() ? CKR_FUNCTION_NOT_SUPPORTED : CKR_CRYPTOKI_NOT_INITIALIZED

static CK_RV kg_C_InitToken(CK_SLOT_ID slot_id, unsigned char *pin, unsigned long pin_len,
                            unsigned char *label)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_InitPIN(CK_SESSION_HANDLE session, unsigned char *pin, unsigned long pin_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_SetPIN(CK_SESSION_HANDLE session, unsigned char *old_pin, unsigned long old_len,
                         unsigned char *new_pin, unsigned long new_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_GetOperationState(CK_SESSION_HANDLE session, unsigned char *operation_state,
                                    unsigned long *operation_state_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_SetOperationState(CK_SESSION_HANDLE session, unsigned char *operation_state,
                                    unsigned long operation_state_len, CK_OBJECT_HANDLE encryption_key,
                                    CK_OBJECT_HANDLE authentiation_key)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_CreateObject(CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR templ, unsigned long count,
                               CK_OBJECT_HANDLE *object)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_CopyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR templ,
                             unsigned long count, CK_OBJECT_HANDLE *new_object)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_SetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                                    CK_ATTRIBUTE_PTR templ, unsigned long count)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_EncryptUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,
                                unsigned char *encrypted_part, unsigned long *encrypted_part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_EncryptFinal(CK_SESSION_HANDLE session, unsigned char *last_encrypted_part,
                               unsigned long *last_encrypted_part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DecryptUpdate(CK_SESSION_HANDLE session, unsigned char *encrypted_part,
                                unsigned long encrypted_part_len, unsigned char *part,
                                unsigned long *part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DecryptFinal(CK_SESSION_HANDLE session, unsigned char *last_part,
                               unsigned long *last_part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DigestInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_Digest(CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,
                         unsigned char *digest, unsigned long *digest_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DigestUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DigestKey(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DigestFinal(CK_SESSION_HANDLE session, unsigned char *digest, unsigned long *digest_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_SignRecoverInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_SignRecover(CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,
                              unsigned char *signature, unsigned long *signature_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_VerifyRecoverInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
                                    CK_OBJECT_HANDLE key)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_VerifyRecover(CK_SESSION_HANDLE session, unsigned char *signature,
                                unsigned long signature_len, unsigned char *data, unsigned long *data_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DigestEncryptUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,
                                      unsigned char *encrypted_part, unsigned long *encrypted_part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DecryptDigestUpdate(CK_SESSION_HANDLE session, unsigned char *encrypted_part,
                                      unsigned long encrypted_part_len, unsigned char *part,
                                      unsigned long *part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_SignEncryptUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,
                                    unsigned char *encrypted_part, unsigned long *encrypted_part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_DecryptVerifyUpdate(CK_SESSION_HANDLE session, unsigned char *encrypted_part,
                                      unsigned long encrypted_part_len, unsigned char *part,
                                      unsigned long *part_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_GenerateKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_ATTRIBUTE_PTR templ,
                              unsigned long count, CK_OBJECT_HANDLE *key)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_GenerateKeyPair(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
                                  CK_ATTRIBUTE_PTR public_key_template,
                                  unsigned long public_key_attribute_count,
                                  CK_ATTRIBUTE_PTR private_key_template,
                                  unsigned long private_key_attribute_count, CK_OBJECT_HANDLE *public_key,
                                  CK_OBJECT_HANDLE *private_key)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_WrapKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
                          CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key, unsigned char *wrapped_key,
                          unsigned long *wrapped_key_len)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_UnwrapKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
                            CK_OBJECT_HANDLE unwrapping_key, unsigned char *wrapped_key,
                            unsigned long wrapped_key_len, CK_ATTRIBUTE_PTR templ,
                            unsigned long attribute_count, CK_OBJECT_HANDLE *key)
{
    KG_P11_UNSUPPORTED();
}

static CK_RV kg_C_GetFunctionStatus(CK_SESSION_HANDLE session)
{
    return kg_p11_ready() ? CKR_FUNCTION_NOT_PARALLEL : CKR_CRYPTOKI_NOT_INITIALIZED;
}

static CK_RV kg_C_CancelFunction(CK_SESSION_HANDLE session)
{
    return kg_p11_ready() ? CKR_FUNCTION_NOT_PARALLEL : CKR_CRYPTOKI_NOT_INITIALIZED;
}

static CK_RV kg_C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID *slot, void *reserved)
{
    KG_P11_UNSUPPORTED(); /* one slot whose token never changes */
}

CK_FUNCTION_LIST kg_p11_function_list = {
    {2, 40},
    kg_C_Initialize,
    kg_C_Finalize,
    kg_C_GetInfo,
    kg_C_GetFunctionList,
    kg_C_GetSlotList,
    kg_C_GetSlotInfo,
    kg_C_GetTokenInfo,
    kg_C_GetMechanismList,
    kg_C_GetMechanismInfo,
    kg_C_InitToken,
    kg_C_InitPIN,
    kg_C_SetPIN,
    kg_C_OpenSession,
    kg_C_CloseSession,
    kg_C_CloseAllSessions,
    kg_C_GetSessionInfo,
    kg_C_GetOperationState,
    kg_C_SetOperationState,
    kg_C_Login,
    kg_C_Logout,
    kg_C_CreateObject,
    kg_C_CopyObject,
    kg_C_DestroyObject,
    kg_C_GetObjectSize,
    kg_C_GetAttributeValue,
    kg_C_SetAttributeValue,
    kg_C_FindObjectsInit,
    kg_C_FindObjects,
    kg_C_FindObjectsFinal,
    kg_C_EncryptInit,
    kg_C_Encrypt,
    kg_C_EncryptUpdate,
    kg_C_EncryptFinal,
    kg_C_DecryptInit,
    kg_C_Decrypt,
    kg_C_DecryptUpdate,
    kg_C_DecryptFinal,
    kg_C_DigestInit,
    kg_C_Digest,
    kg_C_DigestUpdate,
    kg_C_DigestKey,
    kg_C_DigestFinal,
    kg_C_SignInit,
    kg_C_Sign,
    kg_C_SignUpdate,
    kg_C_SignFinal,
    kg_C_SignRecoverInit,
    kg_C_SignRecover,
    kg_C_VerifyInit,
    kg_C_Verify,
    kg_C_VerifyUpdate,
    kg_C_VerifyFinal,
    kg_C_VerifyRecoverInit,
    kg_C_VerifyRecover,
    kg_C_DigestEncryptUpdate,
    kg_C_DecryptDigestUpdate,
    kg_C_SignEncryptUpdate,
    kg_C_DecryptVerifyUpdate,
    kg_C_GenerateKey,
    kg_C_GenerateKeyPair,
    kg_C_WrapKey,
    kg_C_UnwrapKey,
    kg_C_DeriveKey,
    kg_C_SeedRandom,
    kg_C_GenerateRandom,
    kg_C_GetFunctionStatus,
    kg_C_CancelFunction,
    kg_C_WaitForSlotEvent,
};
