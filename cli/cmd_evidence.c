/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate evidence: pipeline step 3 (with the nonce of step 2) from the command line, and two
 * offline tools that need neither a configuration nor the network:
 *   --replay        replays the CCEL event log into RTMR0..3 (values for MRTD/RTMR policies)
 *   --parse-quote F prints the fields of a TDX v4 or v5 quote
 */
#define _GNU_SOURCE /* secure_getenv */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccel.h"
#include "cli.h"
#include "kg_attest.h"
#include "kg_b64.h"
#include "kg_json.h"
#include "tdx_quote.h"
#include "tdx_tsm.h"

#define QUOTE_FILE_MAX (1024 * 1024)

typedef struct evidence_args {
    const char *user_data_file;
    const char *out_file;
    int no_nonce;
    int replay;
    const char *ccel_table;  /* --ccel-table */
    const char *ccel_data;   /* --ccel-data */
    const char *parse_quote; /* --parse-quote FILE */
} evidence_args;

/* Returns -1 to continue, else an exit code. */
static int parse_args(int argc, char **argv, kg_cli_common *common, evidence_args *a)
{
    static const struct option opts[] = {KG_CLI_COMMON_LONG,
                                         {"user-data-file", required_argument, NULL, 'u'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"no-nonce", no_argument, NULL, 'N'},
                                         {"replay", no_argument, NULL, 'R'},
                                         {"ccel-table", required_argument, NULL, 'T'},
                                         {"ccel-data", required_argument, NULL, 'D'},
                                         {"parse-quote", required_argument, NULL, 'P'},
                                         {NULL, 0, NULL, 0}};
    int c;

    memset(a, 0, sizeof(*a));
    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT "u:o:N", opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, common))
            continue;
        switch (c) {
        case 'u': a->user_data_file = optarg; break;
        case 'o': a->out_file = optarg; break;
        case 'N': a->no_nonce = 1; break;
        case 'R': a->replay = 1; break;
        case 'T': a->ccel_table = optarg; break;
        case 'D': a->ccel_data = optarg; break;
        case 'P': a->parse_quote = optarg; break;
        case 'h':
            printf(
                "usage: keygate evidence [--config F] [--json] [--user-data-file F] [--no-nonce] [--out F]\n"
                "       keygate evidence --replay [--ccel-table F] [--ccel-data F] [--json]\n"
                "       keygate evidence --parse-quote F [--json]\n"
                "  Collects TDX evidence for a fresh ITA nonce (or none with --no-nonce) and the user\n"
                "  data, and prints it as the ITA v2 'tdx' request object; --out writes the raw quote.\n"
                "  --replay replays the CCEL event log (TCG2, SHA-384) into RTMR0..3 and prints every\n"
                "  event (defaults: ccel_table/ccel_data of the configuration given with --config or\n"
                "  $KEYGATE_CONF, else /sys/firmware/acpi/tables/CCEL and .../data/CCEL).\n"
                "  --parse-quote prints a TDX v4 quote's header and TD report fields.\n"
                "  Neither needs the network.\n");
            kg_cli_help_tail(stdout);
            return KG_EXIT_OK;
        default: return kg_cli_bad_option("evidence", argv);
        }
    }
    if (optind != argc)
        return kg_cli_usage_error("evidence", "unexpected argument '%s'", argv[optind]);
    if (a->replay && a->parse_quote)
        return kg_cli_usage_error("evidence", "--replay and --parse-quote do not go together");
    if (!a->replay && (a->ccel_table || a->ccel_data))
        return kg_cli_usage_error("evidence", "--ccel-table and --ccel-data need --replay");
    return -1;
}

static void hex_string(const uint8_t *p, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    out[2 * len] = '\0';
}

/* Adds "name": "<hex>"; returns 1/0. */
static int add_hex(cJSON *obj, const char *name, const uint8_t *p, size_t len)
{
    char buf[2 * 64 + 1];

    if (len > 64)
        return 0;
    hex_string(p, len, buf);
    return cJSON_AddStringToObject(obj, name, buf) != NULL;
}

static void print_hex_line(const char *label, const uint8_t *p, size_t len)
{
    char buf[2 * 64 + 1];

    hex_string(p, len, buf);
    printf("%-17s %s\n", label, buf);
}

static const char *mr_name(uint32_t mr_index)
{
    static const char *names[] = {"MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3"};
    return mr_index <= CCEL_MR_COUNT ? names[mr_index] : "?";
}

typedef struct replay_state {
    cJSON *events; /* JSON mode: the array being filled; NULL in text mode */
    size_t last;   /* number of the last event seen */
    int oom;
} replay_state;

static void replay_event(void *arg, const ccel_event *ev)
{
    replay_state *st = arg;
    const char *type_name = ccel_event_type_name(ev->event_type);
    char digest[2 * CCEL_SHA384_LEN + 1] = "-";
    cJSON *o;

    st->last = ev->number;
    if (ev->sha384 != NULL)
        hex_string(ev->sha384, CCEL_SHA384_LEN, digest);
    if (st->events == NULL) {
        printf("%5zu %7zu  %-5s  0x%08x %-32s %s%s\n", ev->number, ev->offset, mr_name(ev->mr_index),
               ev->event_type, type_name ? type_name : "", digest,
               ev->number == 0 ? "  (Spec ID Event03)"
               : ev->extended  ? ""
                               : "  (not extended)");
        return;
    }
    o = cJSON_CreateObject();
    if (o == NULL || !cJSON_AddItemToArray(st->events, o) ||
        cJSON_AddNumberToObject(o, "number", (double)ev->number) == NULL ||
        cJSON_AddNumberToObject(o, "offset", (double)ev->offset) == NULL ||
        cJSON_AddNumberToObject(o, "mr_index", ev->mr_index) == NULL ||
        cJSON_AddStringToObject(o, "mr", mr_name(ev->mr_index)) == NULL ||
        cJSON_AddNumberToObject(o, "event_type", ev->event_type) == NULL ||
        (type_name && cJSON_AddStringToObject(o, "event_type_name", type_name) == NULL) ||
        (ev->sha384 ? cJSON_AddStringToObject(o, "sha384", digest) : cJSON_AddNullToObject(o, "sha384")) ==
            NULL ||
        cJSON_AddBoolToObject(o, "extended", ev->extended) == NULL ||
        cJSON_AddNumberToObject(o, "data_len", (double)ev->data_len) == NULL)
        st->oom = 1;
}

/* Where --replay reads from: the options, else an explicitly named configuration, else sysfs. */
static int replay_paths(const kg_cli_common *common, const evidence_args *a, char table[512], char data[512],
                        kg_err *err)
{
    const char *conf = common->config_path ? common->config_path : secure_getenv("KEYGATE_CONF");
    kg_config cfg;

    kg_config_defaults(&cfg);
    if (a->ccel_table == NULL && a->ccel_data == NULL && conf != NULL && *conf != '\0' &&
        !kg_config_load_file(&cfg, conf, err))
        return 0;
    snprintf(table, 512, "%s", a->ccel_table ? a->ccel_table : a->ccel_data ? "" : cfg.ad.ccel_table);
    snprintf(data, 512, "%s", a->ccel_data ? a->ccel_data : cfg.ad.ccel_data);
    return 1;
}

static int cmd_replay(const kg_cli_common *common, const evidence_args *a)
{
    uint8_t rtmr[CCEL_MR_COUNT][CCEL_SHA384_LEN], *buf = NULL, *log = NULL;
    char table_path[512], data_path[512], *s = NULL;
    size_t len = 0, log_len = 0, events_len = 0;
    replay_state st = {NULL, 0, 0};
    cJSON *out = NULL, *t;
    ccel_table table;
    int have_table = 0, rc;
    kg_err err;

    kg_err_clear(&err);
    if (!replay_paths(common, a, table_path, data_path, &err))
        goto fail;
    if (table_path[0] != '\0') {
        if (!kg_cli_read_file(table_path, 4096, &buf, &len, &err)) {
            const char *cause = strncmp(err.msg, "config: ", 8) == 0 ? err.msg + 8 : err.msg;
            char msg[sizeof(err.msg)];
            snprintf(msg, sizeof(msg), "%s", cause);
            kg_err_set(&err, KG_STEP_EVIDENCE, "CCEL table: %s%s", msg,
                       a->ccel_table ? ""
                                     : " (no CCEL here? name the files with --ccel-table and --ccel-data)");
            goto fail;
        }
        if (!ccel_table_parse(buf, len, &table, &err))
            goto fail;
        have_table = 1;
    }
    /* bounded read, replay and trim to the events (the same code as the adapter) */
    if (!tdx_ccel_read_log(NULL, data_path, &log, &log_len, &err))
        goto fail;
    if (common->json) {
        out = cJSON_CreateObject();
        if (out == NULL || (st.events = cJSON_AddArrayToObject(out, "events")) == NULL)
            goto oom;
    } else {
        if (have_table)
            printf("CCEL table: revision %u, OEM '%s' '%s', CC type %u (TDX) subtype %u, LAML 0x%llx, "
                   "LASA 0x%llx\n",
                   table.revision, table.oem_id, table.oem_table_id, table.cc_type, table.cc_subtype,
                   (unsigned long long)table.laml, (unsigned long long)table.lasa);
        printf("event  offset  MR     type       name                             SHA-384\n");
    }
    if (!ccel_replay(log, log_len, rtmr, &events_len, replay_event, &st, &err))
        goto fail;
    if (st.oom)
        goto oom;
    if (common->json) {
        if (have_table) {
            if ((t = cJSON_AddObjectToObject(out, "table")) == NULL ||
                cJSON_AddNumberToObject(t, "revision", table.revision) == NULL ||
                cJSON_AddStringToObject(t, "oem_id", table.oem_id) == NULL ||
                cJSON_AddStringToObject(t, "oem_table_id", table.oem_table_id) == NULL ||
                cJSON_AddNumberToObject(t, "cc_type", table.cc_type) == NULL ||
                cJSON_AddNumberToObject(t, "cc_subtype", table.cc_subtype) == NULL ||
                cJSON_AddNumberToObject(t, "laml", (double)table.laml) == NULL ||
                cJSON_AddNumberToObject(t, "lasa", (double)table.lasa) == NULL)
                goto oom;
        }
        if (cJSON_AddNumberToObject(out, "events_len", (double)events_len) == NULL ||
            !add_hex(out, "rtmr0", rtmr[0], CCEL_SHA384_LEN) ||
            !add_hex(out, "rtmr1", rtmr[1], CCEL_SHA384_LEN) ||
            !add_hex(out, "rtmr2", rtmr[2], CCEL_SHA384_LEN) ||
            !add_hex(out, "rtmr3", rtmr[3], CCEL_SHA384_LEN) || (s = cJSON_PrintUnformatted(out)) == NULL)
            goto oom;
        printf("%s\n", s);
    } else {
        printf("%zu events after the Spec ID event, %zu bytes\n", st.last, events_len);
        for (int i = 0; i < CCEL_MR_COUNT; i++)
            print_hex_line(mr_name((uint32_t)i + 1), rtmr[i], CCEL_SHA384_LEN);
    }
    rc = KG_EXIT_OK;
    goto end;
oom:
    kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
fail:
    rc = kg_cli_fail(&err);
end:
    free(s);
    cJSON_Delete(out);
    free(buf);
    free(log);
    return rc;
}

/* TEE_TCB_SVN2 and MRSERVICETD: hex for a TD report 1.5 (v5 body type 3), else null. */
static int add_tdx15_fields(cJSON *out, const tdx_quote *q)
{
    if (q->body_type == TDX_BODY_TYPE_TD_REPORT15)
        return add_hex(out, "tee_tcb_svn2", q->tee_tcb_svn2, 16) &&
               add_hex(out, "mrservicetd", q->mrservicetd, 48);
    return cJSON_AddNullToObject(out, "tee_tcb_svn2") != NULL &&
           cJSON_AddNullToObject(out, "mrservicetd") != NULL;
}

static int cmd_parse_quote(const kg_cli_common *common, const char *path)
{
    static const char *rtmr_names[] = {"rtmr0", "rtmr1", "rtmr2", "rtmr3"};
    uint8_t *buf = NULL, attrs[8];
    size_t len = 0;
    char *s = NULL, label[8];
    cJSON *out = NULL;
    tdx_quote q;
    kg_err err;
    int rc, is_tdx15;

    kg_err_clear(&err);
    if (!kg_cli_read_file(path, QUOTE_FILE_MAX, &buf, &len, &err) || !tdx_quote_parse(buf, len, &q, &err))
        goto fail;
    for (int i = 0; i < 8; i++)
        attrs[i] = (uint8_t)(q.td_attributes >> (8 * i));
    is_tdx15 = q.body_type == TDX_BODY_TYPE_TD_REPORT15;
    if (common->json) {
        out = cJSON_CreateObject();
        if (out == NULL || cJSON_AddNumberToObject(out, "version", q.version) == NULL ||
            cJSON_AddNumberToObject(out, "att_key_type", q.att_key_type) == NULL ||
            cJSON_AddNumberToObject(out, "tee_type", q.tee_type) == NULL ||
            cJSON_AddNumberToObject(out, "body_type", q.body_type) == NULL ||
            cJSON_AddNumberToObject(out, "body_size", q.body_size) == NULL ||
            cJSON_AddNumberToObject(out, "qe_svn", q.qe_svn) == NULL ||
            cJSON_AddNumberToObject(out, "pce_svn", q.pce_svn) == NULL ||
            !add_hex(out, "qe_vendor_id", q.qe_vendor_id, 16) ||
            !add_hex(out, "header_user_data", q.header_user_data, 20) ||
            !add_hex(out, "tee_tcb_svn", q.tee_tcb_svn, 16) || !add_hex(out, "mrseam", q.mrseam, 48) ||
            !add_hex(out, "mrsignerseam", q.mrsignerseam, 48) ||
            !add_hex(out, "seam_attributes", q.seam_attributes, 8) ||
            !add_hex(out, "td_attributes", attrs, 8) ||
            cJSON_AddBoolToObject(out, "debug", tdx_quote_is_debug(&q)) == NULL ||
            cJSON_AddBoolToObject(out, "sept_ve_disable",
                                  (q.td_attributes & TDX_TD_ATTR_SEPT_VE_DISABLE) != 0) == NULL ||
            !add_hex(out, "xfam", q.xfam, 8) || !add_hex(out, "mrtd", q.mrtd, 48) ||
            !add_hex(out, "mrconfigid", q.mrconfigid, 48) || !add_hex(out, "mrowner", q.mrowner, 48) ||
            !add_hex(out, "mrownerconfig", q.mrownerconfig, 48))
            goto oom;
        for (int i = 0; i < 4; i++)
            if (!add_hex(out, rtmr_names[i], q.rtmr[i], 48))
                goto oom;
        if (!add_hex(out, "report_data", q.report_data, 64) || !add_tdx15_fields(out, &q) ||
            cJSON_AddNumberToObject(out, "quote_len", (double)q.quote_len) == NULL ||
            cJSON_AddNumberToObject(out, "file_len", (double)len) == NULL ||
            cJSON_AddNumberToObject(out, "pck_chain_len", q.pck_chain_len) == NULL ||
            (s = cJSON_PrintUnformatted(out)) == NULL)
            goto oom;
        printf("%s\n", s);
    } else {
        printf("%-17s %u\n%-17s %u (ECDSA-P256)\n%-17s 0x%x (TDX)\n%-17s %u\n%-17s %u\n", "version",
               q.version, "att_key_type", q.att_key_type, "tee_type", q.tee_type, "qe_svn", q.qe_svn,
               "pce_svn", q.pce_svn);
        printf("%-17s %u (TD report %s), %u bytes%s\n", "body_type", q.body_type, is_tdx15 ? "1.5" : "1.0",
               q.body_size, q.version == TDX_QUOTE_VERSION_4 ? " (v4: no body descriptor)" : "");
        print_hex_line("qe_vendor_id", q.qe_vendor_id, 16);
        print_hex_line("header_user_data", q.header_user_data, 20);
        print_hex_line("TEE_TCB_SVN", q.tee_tcb_svn, 16);
        print_hex_line("MRSEAM", q.mrseam, 48);
        print_hex_line("MRSIGNERSEAM", q.mrsignerseam, 48);
        print_hex_line("SEAMATTRIBUTES", q.seam_attributes, 8);
        print_hex_line("TDATTRIBUTES", attrs, 8);
        printf("%-17s DEBUG=%d SEPT_VE_DISABLE=%d\n", "", tdx_quote_is_debug(&q),
               (q.td_attributes & TDX_TD_ATTR_SEPT_VE_DISABLE) != 0);
        print_hex_line("XFAM", q.xfam, 8);
        print_hex_line("MRTD", q.mrtd, 48);
        print_hex_line("MRCONFIGID", q.mrconfigid, 48);
        print_hex_line("MROWNER", q.mrowner, 48);
        print_hex_line("MROWNERCONFIG", q.mrownerconfig, 48);
        for (int i = 0; i < 4; i++) {
            snprintf(label, sizeof(label), "RTMR%d", i);
            print_hex_line(label, q.rtmr[i], 48);
        }
        print_hex_line("REPORTDATA", q.report_data, 64);
        if (is_tdx15) {
            print_hex_line("TEE_TCB_SVN2", q.tee_tcb_svn2, 16);
            print_hex_line("MRSERVICETD", q.mrservicetd, 48);
        }
        printf("%-17s %zu bytes (file %zu), PCK chain %u bytes\n", "quote", q.quote_len, len,
               q.pck_chain_len);
    }
    rc = KG_EXIT_OK;
    goto end;
oom:
    kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
fail:
    rc = kg_cli_fail(&err);
end:
    free(s);
    cJSON_Delete(out);
    free(buf);
    return rc;
}

int kg_cmd_evidence(int argc, char **argv, const kg_cli_common *common_in)
{
    kg_cli_common common = *common_in;
    evidence_args args;
    kg_config cfg;
    kg_evidence ev;
    ita_nonce nonce;
    ita_client *ita = NULL;
    kg_err err;
    uint8_t *ud = NULL;
    size_t ud_len = 0;
    cJSON *out = NULL, *vn;
    int rc;

    memset(&ev, 0, sizeof(ev));
    memset(&nonce, 0, sizeof(nonce));
    kg_err_clear(&err);
    if ((rc = parse_args(argc, argv, &common, &args)) >= 0)
        return rc;
    if (args.replay)
        return cmd_replay(&common, &args);
    if (args.parse_quote)
        return cmd_parse_quote(&common, args.parse_quote);
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    if (args.user_data_file &&
        !kg_cli_read_file(args.user_data_file, KG_CLI_MAX_USER_DATA, &ud, &ud_len, &err))
        return kg_cli_fail(&err);
    if (!args.no_nonce) {
        int key_failed;
        ita_client_opts copts = {cfg.ita_api_url, cfg.ita_base_url, cfg.ita_api_key_file, {0}, NULL};
        kg_config_http_opts(&cfg, KG_SVC_ITA, &copts.http);
        copts.api_key = kg_cli_api_key(&common, &key_failed, &err);
        if (key_failed || (ita = ita_client_new(&copts, &err)) == NULL || !ita_get_nonce(ita, &nonce, &err))
            goto fail;
    }
    if (!kg_collect_evidence(&cfg, args.no_nonce ? NULL : &nonce, ud, ud_len, &ev, &err))
        goto fail;
    if (args.out_file) {
        FILE *fp = fopen(args.out_file, "wbe");
        if (fp == NULL || fwrite(ev.quote, 1, ev.quote_len, fp) != ev.quote_len || fclose(fp) != 0) {
            kg_err_set(&err, KG_STEP_EVIDENCE, "%s: cannot write the quote", args.out_file);
            goto fail;
        }
    }
    out = cJSON_CreateObject();
    if (out == NULL || !kg_json_add_b64(out, "quote", ev.quote, ev.quote_len) ||
        (ev.runtime_data_len > 0 &&
         !kg_json_add_b64(out, "runtime_data", ev.runtime_data, ev.runtime_data_len)) ||
        (ev.event_log_len > 0 && !kg_json_add_b64(out, "event_log", ev.event_log, ev.event_log_len)) ||
        !kg_json_add_b64(out, "report_data", ev.report_data, sizeof(ev.report_data))) {
        kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
        goto fail;
    }
    if (!args.no_nonce) {
        vn = cJSON_AddObjectToObject(out, "verifier_nonce");
        if (vn == NULL || !kg_json_add_b64(vn, "val", nonce.val, nonce.val_len) ||
            !kg_json_add_b64(vn, "iat", nonce.iat, nonce.iat_len) ||
            !kg_json_add_b64(vn, "signature", nonce.signature, nonce.signature_len)) {
            kg_err_set(&err, KG_STEP_INTERNAL, "out of memory");
            goto fail;
        }
    }
    rc = kg_cli_print_text(common.json ? cJSON_PrintUnformatted(out) : cJSON_Print(out), &err);
    goto end;
fail:
    rc = kg_cli_fail(&err);
end:
    cJSON_Delete(out);
    kg_evidence_clear(&ev);
    ita_nonce_clear(&nonce);
    ita_client_free(ita);
    free(ud);
    return rc;
}
