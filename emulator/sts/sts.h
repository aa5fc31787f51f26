/* sts.h - the STS service of kiln-emulator (awsQuery, sts_protocol.c):
 * who the caller is (GetCallerIdentity) and temporary credentials
 * (GetSessionToken).  kiln-emulator's accounts are
 * identified by their root credentials, so the caller is an account's root
 * user: Arn arn:aws:iam::ACCOUNT:root, UserId the account id, as AWS answers
 * for root credentials. */
#ifndef KILN_EMULATOR_STS_H
#define KILN_EMULATOR_STS_H

#include "emulator.h"

/* The operation named by Action, its awsQuery reply
 * (<OpResponse><OpResult>...</OpResult><ResponseMetadata>) into resp; the
 * error recorded on c (emu_fail) as <ErrorResponse><Error><Type>. */
void emu_sts_serve (struct emu_call *c, struct emu_response *resp);
void emu_sts_error_reply (struct emu_call *c, struct emu_response *resp);
/* Authentication failures as STS names them (InvalidClientTokenId ...). */
void emu_sts_auth_error (enum emu_auth_failure kind, bool presigned, int *status, const char **code);

#endif
