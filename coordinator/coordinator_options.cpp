// The coordinator's flags (see coordinator_options.h).
#include "coordinator_options.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "cli_checks.h"
#include "fedsgd/curve_keys.h"
#include "fedsgd/curve_socket.h"
#include "fedsgd/error.h"
#include "fedsgd/json_config.h"
#include "fedsgd/wire.h"
#include "http_api.h"
#include "key_store.h"

namespace fedsgd {

void AddCoordinatorOptions(CLI::App& app, CoordinatorOptions& o) {
  AddJsonConfig(app);
  app.add_option("--listen", o.listen, "ZeroMQ ROUTER endpoint daemons connect to")
      ->capture_default_str();
  app.add_option("--publish", o.publish,
                 "ZeroMQ PUB endpoint for model broadcasts (tcp://*:P or tcp://0.0.0.0:P: daemons "
                 "use the host they reached --listen on)")
      ->capture_default_str();
  app.add_option("--http", o.http, "HTTP address for the JSON endpoints, HOST:PORT")
      ->capture_default_str();
  app.add_option(
      "--http-token", o.http_token,
      "Require 'Authorization: Bearer TOKEN' on every HTTP endpoint but /healthz (use it "
      "when --http is not bound to 127.0.0.1; better in a --config file than on the "
      "command line)");
  app.add_option("--http-cert", o.http_cert,
                 "Serve HTTPS with this PEM certificate (chain); needs --http-key");
  app.add_option("--http-key", o.http_key, "PEM private key of --http-cert");
  app.add_flag("--insecure", o.insecure,
               "Allow listening on a non-loopback address without CURVE keys, and serving HTTP "
               "on one without --http-token (a warning is logged at every start)");
  app.add_option("--curve-key", o.curve_key,
                 "Encrypt and authenticate the ZeroMQ sockets with CURVE (ZeroMQ RFC 26): this "
                 "coordinator's secret key file, mode 0600, made by `fedsgd-coordinator keygen` "
                 "(needs --authorized-keys; docs/security.md)");
  app.add_option("--authorized-keys", o.authorized_keys,
                 "With --curve-key: directory of device public keys, one <device-id>.key file per "
                 "device; only these devices may connect, each only as its own id; re-read on "
                 "SIGHUP (systemctl reload)");
  app.add_option("--db", o.db, "SQLite database of runs, rounds and checkpoints")
      ->capture_default_str();
  app.add_flag("--check-config", o.check_config,
               "Check the configuration (flags and --config file) and exit: 0 when it is usable");
  app.add_flag("--new-run", o.new_run,
               "Start a new run even if the database holds one (default: resume it)");
  app.add_option("--eval-data", o.eval_data,
                 "Evaluate each new model on this data (a directory means its t10k-* files)");
  app.add_option("--heartbeat-ms", o.heartbeat_ms, "Daemon heartbeat interval")
      ->capture_default_str()
      ->check(CLI::Range(50, 60000));

  // Gateways (docs/protocol.md "Gateways").
  app.add_option("--upstream", o.upstream,
                 "Run as a gateway: serve the boards that connect here as a coordinator does, "
                 "and take part in the root coordinator at this ROUTER endpoint (its --listen) "
                 "as one device, forwarding one pre-aggregated update per round. The plan comes "
                 "from the root: plan flags are refused");
  app.add_option("--gateway-id", o.gateway_id,
                 "A gateway's device id at the root (default: gateway-HOSTNAME)");
  app.add_option("--upstream-key", o.upstream_key,
                 "A gateway's CURVE secret key file for the root (from 'keygen'); the root "
                 "enrols its public half as GATEWAY-ID.key");
  app.add_option("--upstream-server-key", o.upstream_server_key,
                 "The root's CURVE public key file (with --upstream-key)");

  const std::size_t plan_first = app.get_options().size();
  AddPlanOptions(app, o);

  // The plan's flags (and --rounds): a gateway takes them from its root.
  std::vector<std::string> plan_flags;
  const std::vector<CLI::Option*> all = app.get_options();
  for (std::size_t i = plan_first; i < all.size(); ++i) {
    const std::string name = all[i]->get_name();
    if (name != "--max-heartbeat-rate" && name != "--upload-slots") plan_flags.push_back(name);
  }
  app.final_callback([&app, &o, plan_flags] {
    o.plan_flags_given.clear();
    for (const std::string& name : plan_flags) {
      if (app.count(name) > 0) o.plan_flags_given.push_back(name);
    }
  });
  app.add_option("--min-devices", o.min_devices, "Online devices needed to open a round")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--quorum", o.quorum,
                 "Fraction of a round's online participants whose updates close it early")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--min-updates", o.min_updates, "Updates needed to close a round at its deadline")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--round-timeout", o.round_timeout, "Seconds a round waits for updates")
      ->capture_default_str()
      ->check(kPositive);

  app.add_option("--max-devices", o.max_devices,
                 "Devices known at most; a join beyond it is refused (too_many_devices)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--max-joins-per-second", o.max_joins_per_second,
                 "Joins accepted per second from all peers together, in bursts of up to as many "
                 "(each is answered with the whole model); more are refused (rate_limited)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--max-samples-per-device", o.max_samples_per_device,
                 "Samples a device may declare at join; an update's samples, its weight in the "
                 "mean, may not exceed what its device declared (samples_exceeded)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--forget-offline-after", o.forget_offline_after,
                 "Seconds offline after which a device is forgotten (it joins again when it "
                 "comes back)")
      ->capture_default_str()
      ->check(kPositive);
}

void CoordinatorOptions::CheckGateway() const {
  if (!plan_flags_given.empty()) {
    std::string names;
    for (const std::string& n : plan_flags_given) names += (names.empty() ? "" : ", ") + n;
    throw Error(names + (plan_flags_given.size() == 1 ? " is a plan flag" : " are plan flags") +
                ": a gateway (--upstream) serves its root's plan; give " +
                (plan_flags_given.size() == 1 ? "it" : "them") + " to the root coordinator");
  }
  wire::CheckEndpoint(upstream, /*for_bind=*/false);
  if (!wire::ValidDeviceId(GatewayId())) {
    throw Error("--gateway-id '" + GatewayId() +
                "' is not a device id (1..64 of A-Z a-z 0-9 . _ -)");
  }
  if (upstream_key.empty() != upstream_server_key.empty()) {
    throw Error(upstream_key.empty()
                    ? "--upstream-server-key needs --upstream-key (this gateway's secret key file)"
                    : "--upstream-key needs --upstream-server-key (the root's public key file)");
  }
  if (!upstream_key.empty()) {
    if (!curve::Available()) throw Error("--upstream-key: this libzmq was built without CURVE");
    curve::LoadSecretKey(upstream_key);
    curve::LoadPublicKey(upstream_server_key);
  } else if (!curve::IsLoopbackEndpoint(upstream) && !insecure) {
    throw Error("--upstream " + upstream +
                " is on another machine: give --upstream-key and --upstream-server-key to "
                "encrypt and authenticate the link to the root (docs/security.md), or "
                "--insecure to send updates in clear text");
  }
}

std::string CoordinatorOptions::GatewayId() const {
  if (!gateway_id.empty()) return gateway_id;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "gateway";
  std::string id = std::string("gateway-") + host;
  for (char& c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '-';
  }
  return id.substr(0, 64);  // the wire's longest device id
}

void CoordinatorOptions::Check() const {
  if (gateway()) CheckGateway();
  const Plan plan = ToPlan();
  // The noise is calibrated to the sum of clipped updates: another rule's
  // sensitivity is not analysed here.
  if (plan.dp() && aggregator != "mean")
    throw Error("--dp-noise-multiplier needs --aggregator mean, not " + aggregator);
  const std::size_t parameters = plan.TrainableParameters();
  // The buffers must hold at least the updates of --min-devices devices
  // (in async mode, of one --buffer; with device selection, of the N
  // updates a round closes with).
  std::size_t held = plan.async() ? std::max<std::size_t>(min_devices, buffer) : min_devices;
  if (plan.selection()) held = std::min(held, plan.SelectionTarget(min_devices));
  const double need = AggregationBufferBytes(plan, held, parameters);
  if (need > aggregation_memory_mb * 1024 * 1024) {
    throw Error("--aggregator " + aggregator + " with --norm-bound " + norm_bound + " buffers " +
                std::to_string(held) +
                (plan.async()       ? " (--min-devices or --buffer)"
                 : plan.selection() ? " (--clients-per-round)"
                                    : " (--min-devices)") +
                " x " + std::to_string(parameters) +
                " parameters x 4 bytes = " + std::to_string(need / 1048576.0) +
                " MiB, more than --aggregation-memory-mb " + std::to_string(aggregation_memory_mb) +
                "; raise the limit, lower --min-devices or --clients-per-round, or use "
                "--aggregator mean with --norm-bound off or fixed:B (they do not buffer)");
  }
  if (min_updates > min_devices) {
    throw Error("--min-updates (" + std::to_string(min_updates) +
                ") cannot exceed --min-devices (" + std::to_string(min_devices) + ")");
  }
  if (min_devices > max_devices) {
    throw Error("--min-devices (" + std::to_string(min_devices) +
                ") cannot exceed --max-devices (" + std::to_string(max_devices) + ")");
  }
  if (!(max_joins_per_second > 0) || !(forget_offline_after > 0) || max_samples_per_device == 0) {
    throw Error(
        "--max-joins-per-second, --forget-offline-after and --max-samples-per-device must be > 0");
  }
  wire::CheckEndpoint(listen, /*for_bind=*/true);
  wire::CheckEndpoint(publish, /*for_bind=*/true);
  // Two binds of "HOST:*" get two free ports; any other repeat cannot bind.
  if (listen == publish && !listen.ends_with(":*"))
    throw Error("--listen and --publish must differ");
  CheckSecurity();
  const std::string http_host = ParseHostPort(http).first;
  if (!IsLoopbackHost(http_host) && http_token.empty() && !insecure) {
    throw Error("--http " + http +
                " is reachable from other hosts: give --http-token (and "
                "--http-cert/--http-key), or --insecure to serve it without authentication");
  }
  CheckTlsFiles({http_cert, http_key});
  namespace fs = std::filesystem;
  if (!eval_data.empty() && !fs::exists(eval_data))
    throw Error("--eval-data " + eval_data + ": no such file or directory");
  const fs::path parent = fs::absolute(db).parent_path();
  if (!fs::is_directory(parent))
    throw Error("--db " + db + ": directory " + parent.string() + " does not exist");
  if (fs::exists(db)) CheckpointStore::Open(db, /*read_only=*/true);
}

bool CoordinatorOptions::LoopbackOnly() const {
  return curve::IsLoopbackEndpoint(listen) && curve::IsLoopbackEndpoint(publish);
}

void CoordinatorOptions::CheckSecurity() const {
  if (curve_key.empty() != authorized_keys.empty()) {
    throw Error(curve_key.empty()
                    ? "--authorized-keys needs --curve-key (this coordinator's secret key file)"
                    : "--curve-key needs --authorized-keys (the directory of device public keys)");
  }
  if (curve()) {
    if (!curve::Available()) throw Error("--curve-key: this libzmq was built without CURVE");
    curve::LoadSecretKey(curve_key);
    ReadAuthorizedKeys(authorized_keys);
  } else if (!LoopbackOnly() && !insecure) {
    throw Error("--listen " + listen + " / --publish " + publish +
                " can be reached from other machines: give --curve-key and --authorized-keys to "
                "encrypt and authenticate the fleet (docs/security.md), or --insecure to accept "
                "anyone's updates in clear text");
  }
}

RoundSettings CoordinatorOptions::ToRoundSettings() const {
  RoundSettings s;
  s.rounds = rounds;
  s.min_devices = min_devices;
  s.quorum = quorum;
  s.min_updates = min_updates;
  s.round_timeout = round_timeout;
  s.max_devices = max_devices;
  s.forget_offline_after = forget_offline_after;
  // Three missed heartbeats, and never less than 3 s (a busy board may be late).
  s.heartbeat_timeout = std::max(3.0, 3.0 * heartbeat_ms / 1000.0);
  s.max_heartbeat_rate = max_heartbeat_rate;
  s.upload_slots = upload_slots;
  return s;
}

}  // namespace fedsgd
