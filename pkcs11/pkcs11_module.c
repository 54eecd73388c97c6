/*
 * libkeygate-pkcs11.so: the PKCS#11 2.40 module. This first version identifies itself
 * (C_GetInfo), keeps the Initialize/Finalize state machine and exposes no slots yet; every
 * other entry point answers CKR_FUNCTION_NOT_SUPPORTED until the token is built.
 * Only C_GetFunctionList is exported (keygate-pkcs11.map).
 */
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "keygate/version.h"

static pthread_mutex_t kg_p11_lock = PTHREAD_MUTEX_INITIALIZER;
static int kg_p11_initialized;
static pid_t kg_p11_pid;

/* Blank-padded copy into a fixed-size PKCS#11 string field (never NUL-terminated). */
static void kg_p11_pad(unsigned char *dst, size_t size, const char *src)
{
    size_t len = strlen(src);
    memset(dst, ' ', size);
    memcpy(dst, src, len < size ? len : size);
}

/* After fork() the child must call C_Initialize again (PKCS#11 §6.7.7). */
static int kg_p11_ready(void)
{
    return kg_p11_initialized && kg_p11_pid == getpid();
}

static CK_RV kg_C_Initialize(CK_VOID_PTR init_args)
{
    CK_C_INITIALIZE_ARGS *args = init_args;
    CK_RV rv = CKR_OK;

    if (args != NULL) {
        int some = args->CreateMutex || args->DestroyMutex || args->LockMutex || args->UnlockMutex;
        int all = args->CreateMutex && args->DestroyMutex && args->LockMutex && args->UnlockMutex;
        if (some && !all)
            return CKR_ARGUMENTS_BAD;
        /* we lock internally with pthreads whatever the application offers */
    }
    pthread_mutex_lock(&kg_p11_lock);
    if (kg_p11_ready())
        rv = CKR_CRYPTOKI_ALREADY_INITIALIZED;
    else {
        kg_p11_initialized = 1;
        kg_p11_pid = getpid();
    }
    pthread_mutex_unlock(&kg_p11_lock);
    return rv;
}

static CK_RV kg_C_Finalize(CK_VOID_PTR reserved)
{
    CK_RV rv = CKR_OK;

    if (reserved != NULL)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&kg_p11_lock);
    if (!kg_p11_ready())
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
    else
        kg_p11_initialized = 0;
    pthread_mutex_unlock(&kg_p11_lock);
    return rv;
}

static CK_RV kg_C_GetInfo(CK_INFO_PTR info)
{
    if (!kg_p11_ready())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (info == NULL)
        return CKR_ARGUMENTS_BAD;
    memset(info, 0, sizeof(*info));
    info->cryptokiVersion.major = 2;
    info->cryptokiVersion.minor = 40;
    kg_p11_pad(info->manufacturerID, sizeof(info->manufacturerID), "keygate");
    kg_p11_pad(info->libraryDescription, sizeof(info->libraryDescription), "keygate attested keys");
    info->libraryVersion.major = KEYGATE_VERSION_MAJOR;
    info->libraryVersion.minor = KEYGATE_VERSION_MINOR;
    return CKR_OK;
}

static CK_RV kg_C_GetSlotList(CK_BBOOL token_present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
    if (!kg_p11_ready())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (count == NULL)
        return CKR_ARGUMENTS_BAD;
    *count = 0; /* no token yet */
    return CKR_OK;
}

static CK_RV kg_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

static CK_RV kg_C_GetSlotInfo(CK_SLOT_ID slot_id, CK_SLOT_INFO_PTR info)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GetTokenInfo(CK_SLOT_ID slot_id, CK_TOKEN_INFO_PTR info)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GetMechanismList(CK_SLOT_ID slot_id, CK_MECHANISM_TYPE *mechanism_list,
                                   unsigned long *count)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GetMechanismInfo(CK_SLOT_ID slot_id, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_InitToken(CK_SLOT_ID slot_id, unsigned char *pin, unsigned long pin_len,
                            unsigned char *label)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_InitPIN(CK_SESSION_HANDLE session, unsigned char *pin, unsigned long pin_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SetPIN(CK_SESSION_HANDLE session, unsigned char *old_pin, unsigned long old_len,
                         unsigned char *new_pin, unsigned long new_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_OpenSession(CK_SLOT_ID slot_id, CK_FLAGS flags, void *application, CK_NOTIFY notify,
                              CK_SESSION_HANDLE *session)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_CloseSession(CK_SESSION_HANDLE session)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_CloseAllSessions(CK_SLOT_ID slot_id)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GetSessionInfo(CK_SESSION_HANDLE session, CK_SESSION_INFO_PTR info)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GetOperationState(CK_SESSION_HANDLE session, unsigned char *operation_state,
                                    unsigned long *operation_state_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SetOperationState(CK_SESSION_HANDLE session, unsigned char *operation_state,
                                    unsigned long operation_state_len, CK_OBJECT_HANDLE encryption_key,
                                    CK_OBJECT_HANDLE authentiation_key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_Login(CK_SESSION_HANDLE session, CK_USER_TYPE user_type, unsigned char *pin,
                        unsigned long pin_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_Logout(CK_SESSION_HANDLE session)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_CreateObject(CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR templ, unsigned long count,
                               CK_OBJECT_HANDLE *object)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_CopyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR templ,
                             unsigned long count, CK_OBJECT_HANDLE *new_object)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DestroyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GetObjectSize(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, unsigned long *size)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                                    CK_ATTRIBUTE_PTR templ, unsigned long count)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                                    CK_ATTRIBUTE_PTR templ, unsigned long count)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_FindObjectsInit(CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR templ, unsigned long count)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_FindObjects(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE *object,
                              unsigned long max_object_count, unsigned long *object_count)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_FindObjectsFinal(CK_SESSION_HANDLE session)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_EncryptInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_Encrypt(CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,
                          unsigned char *encrypted_data, unsigned long *encrypted_data_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_EncryptUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,
                                unsigned char *encrypted_part, unsigned long *encrypted_part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_EncryptFinal(CK_SESSION_HANDLE session, unsigned char *last_encrypted_part,
                               unsigned long *last_encrypted_part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DecryptInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_Decrypt(CK_SESSION_HANDLE session, unsigned char *encrypted_data,
                          unsigned long encrypted_data_len, unsigned char *data, unsigned long *data_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DecryptUpdate(CK_SESSION_HANDLE session, unsigned char *encrypted_part,
                                unsigned long encrypted_part_len, unsigned char *part,
                                unsigned long *part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DecryptFinal(CK_SESSION_HANDLE session, unsigned char *last_part,
                               unsigned long *last_part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DigestInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_Digest(CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,
                         unsigned char *digest, unsigned long *digest_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DigestUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DigestKey(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DigestFinal(CK_SESSION_HANDLE session, unsigned char *digest, unsigned long *digest_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SignInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_Sign(CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,
                       unsigned char *signature, unsigned long *signature_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SignUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SignFinal(CK_SESSION_HANDLE session, unsigned char *signature, unsigned long *signature_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SignRecoverInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SignRecover(CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,
                              unsigned char *signature, unsigned long *signature_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_VerifyInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_Verify(CK_SESSION_HANDLE session, unsigned char *data, unsigned long data_len,
                         unsigned char *signature, unsigned long signature_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_VerifyUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_VerifyFinal(CK_SESSION_HANDLE session, unsigned char *signature,
                              unsigned long signature_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_VerifyRecoverInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
                                    CK_OBJECT_HANDLE key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_VerifyRecover(CK_SESSION_HANDLE session, unsigned char *signature,
                                unsigned long signature_len, unsigned char *data, unsigned long *data_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DigestEncryptUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,
                                      unsigned char *encrypted_part, unsigned long *encrypted_part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DecryptDigestUpdate(CK_SESSION_HANDLE session, unsigned char *encrypted_part,
                                      unsigned long encrypted_part_len, unsigned char *part,
                                      unsigned long *part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SignEncryptUpdate(CK_SESSION_HANDLE session, unsigned char *part, unsigned long part_len,
                                    unsigned char *encrypted_part, unsigned long *encrypted_part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DecryptVerifyUpdate(CK_SESSION_HANDLE session, unsigned char *encrypted_part,
                                      unsigned long encrypted_part_len, unsigned char *part,
                                      unsigned long *part_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GenerateKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_ATTRIBUTE_PTR templ,
                              unsigned long count, CK_OBJECT_HANDLE *key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GenerateKeyPair(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
                                  CK_ATTRIBUTE_PTR public_key_template,
                                  unsigned long public_key_attribute_count,
                                  CK_ATTRIBUTE_PTR private_key_template,
                                  unsigned long private_key_attribute_count, CK_OBJECT_HANDLE *public_key,
                                  CK_OBJECT_HANDLE *private_key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_WrapKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
                          CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key, unsigned char *wrapped_key,
                          unsigned long *wrapped_key_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_UnwrapKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
                            CK_OBJECT_HANDLE unwrapping_key, unsigned char *wrapped_key,
                            unsigned long wrapped_key_len, CK_ATTRIBUTE_PTR templ,
                            unsigned long attribute_count, CK_OBJECT_HANDLE *key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_DeriveKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE base_key,
                            CK_ATTRIBUTE_PTR templ, unsigned long attribute_count, CK_OBJECT_HANDLE *key)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_SeedRandom(CK_SESSION_HANDLE session, unsigned char *seed, unsigned long seed_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GenerateRandom(CK_SESSION_HANDLE session, unsigned char *random_data,
                                 unsigned long random_len)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_GetFunctionStatus(CK_SESSION_HANDLE session)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_CancelFunction(CK_SESSION_HANDLE session)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_RV kg_C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID *slot, void *reserved)
{
    return CKR_FUNCTION_NOT_SUPPORTED;
}

static CK_FUNCTION_LIST kg_p11_functions = {
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

static CK_RV kg_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    *list = &kg_p11_functions;
    return CKR_OK;
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    return kg_C_GetFunctionList(list);
}
