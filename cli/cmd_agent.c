/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate agent: holds released keys and serves private-key operations on a unix socket
 * (docs/agent.md, agent/kg_agent_server.h). Runs in the foreground until SIGTERM or SIGINT.
 *
 * Signals are blocked in every thread (the mask is inherited) and taken by this thread with
 * sigwait, so no handler runs in the middle of a release or an operation.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kg_agent_server.h"
#include "kg_log.h"

static void help(void)
{
    printf("usage: keygate agent [--config F]\n"
           "  Runs the keygate agent in the foreground: releases the keys of agent_keys with one\n"
           "  attestation, holds them with their leases, and serves private-key operations (sign,\n"
           "  RSA decrypt, ECDH) to local clients on agent_socket (mode 0660, group\n"
           "  agent_socket_group) or on the socket systemd passes (LISTEN_FDS). Each key has its\n"
           "  allow list of uids and gids, checked with SO_PEERCRED. Clients never receive key\n"
           "  bytes. Keys that fail to release at start are logged and retried at first use.\n"
           "  Stops on SIGTERM or SIGINT (exit 0), removing the socket it created. Logs go to\n"
           "  stderr (KEYGATE_DEBUG for more). docs/agent.md describes it.\n");
    kg_cli_help_tail(stdout);
}

int kg_cmd_agent(int argc, char **argv, const kg_cli_common *common_in)
{
    static const struct option opts[] = {KG_CLI_COMMON_LONG, {NULL, 0, NULL, 0}};
    kg_cli_common common = *common_in;
    kg_agent_server *srv = NULL;
    sigset_t set;
    kg_config cfg;
    kg_err err;
    int c, sig = 0;

    kg_err_clear(&err);
    while ((c = getopt_long(argc, argv, KG_CLI_COMMON_SHORT, opts, NULL)) != -1) {
        if (kg_cli_common_opt(c, optarg, &common))
            continue;
        if (c == 'h') {
            help();
            return KG_EXIT_OK;
        }
        return kg_cli_bad_option("agent", argv);
    }
    if (optind != argc)
        return kg_cli_usage_error("agent", "unexpected argument '%s'", argv[optind]);
    if (common.api_key_file != NULL && strcmp(common.api_key_file, "-") == 0)
        return kg_cli_usage_error("agent", "--api-key-file -: the agent reads its API key from a file");
    if (!kg_cli_load_config(&common, &cfg, &err))
        return kg_cli_fail(&err);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if ((srv = kg_agent_server_new(&cfg, &err)) == NULL || !kg_agent_server_start(srv, &err)) {
        kg_agent_server_free(srv);
        return kg_cli_fail(&err);
    }
    while (sigwait(&set, &sig) != 0)
        ;
    KG_WARN("agent: %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    kg_agent_server_stop(srv);
    kg_agent_server_wait(srv);
    kg_agent_server_free(srv);
    KG_WARN("agent: stopped");
    return KG_EXIT_OK;
}
