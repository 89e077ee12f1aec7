// CoordinatorServer's start-up (see coordinator_server.h): the plan, the
// database and its run, the initial model, keys, sockets and the HTTP
// endpoints, before the loop of coordinator_server.cpp runs.
#include <limits>

#include "coordinator_server.h"
#include "fedsgd/broadcast_codec.h"
#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "fedsgd/socket_options.h"
#include "file_limit.h"
#include "initial_model.h"
#include "two_tier_plan.h"

namespace fedsgd {
namespace {

// Messages queued for one peer on the ROUTER, each way. A reply can be a
// whole model: 4 of them bound what one connection that never reads (or a
// burst of requests) can make the coordinator hold (docs/security.md).
constexpr int kRouterHighWaterMark = 4;

using Clock = std::chrono::steady_clock;

}  // namespace

CoordinatorServer::CoordinatorServer(CoordinatorOptions options, std::ostream& log)
    : options_(std::move(options)),
      log_(log),
      router_(context_, zmq::socket_type::router),
      pub_(context_, zmq::socket_type::pub) {}

CoordinatorServer::~CoordinatorServer() {
  if (http_) http_->Stop();
}

void CoordinatorServer::Start(const std::atomic<bool>* stop) {
  start_ = Clock::now();
  options_.Check();  // the same checks as --check-config, before touching anything
  // A gateway serves its root's plan (coordinator_gateway.cpp).
  std::optional<wire::Welcome> root;
  if (options_.gateway()) root = JoinRoot(stop);
  plan_ = root ? GatewayPlan(*root) : options_.ToPlan();
  update_encoding_ = wire::UpdateCodec::Parse(plan_.update_codec).encoding;
  broadcast_encoding_ = wire::ParseBroadcastCodec(plan_.broadcast_codec);
  RoundSettings settings = options_.ToRoundSettings();
  // A gateway's run ends when its root's does.
  if (root) settings.rounds = std::numeric_limits<std::uint64_t>::max();
  const Architecture arch = plan_.architecture();

  if (!options_.eval_data.empty()) {
    CsvOptions csv;
    csv.classification = arch.num_classes() > 0;
    eval_ = LoadDataset(options_.eval_data, Split::kTest, csv);
    if (eval_->num_features != arch.input_size()) {
      throw Error(options_.eval_data + ": the evaluation data has " +
                  std::to_string(eval_->num_features) + " features but model " + arch.ToString() +
                  " expects " + std::to_string(arch.input_size()));
    }
  }

  db_lock_ = DatabaseLock::Acquire(options_.db);
  store_ = CheckpointStore::Open(options_.db);
  std::vector<float> initial;
  if (root) {
    // The root's model; StartGatewayRun stores it.
  } else if (plan_.initial_model.empty()) {
    initial = Model::Create(arch, plan_.seed).params;
  } else {
    InitialModel m = LoadInitialModel(plan_.initial_model, arch);
    if (m.sha256 != plan_.initial_model_sha256) {
      throw Error("--initial-model " + m.source + " changed while the coordinator started");
    }
    initial = std::move(m.params);
  }
  RunState run =
      root ? StartGatewayRun(*root) : store_->StartRun(plan_.ToJson(), initial, options_.new_run);
  resumed_ = run.resumed;
  reader_ = CheckpointStore::Open(options_.db, /*read_only=*/true);
  const Plan round_plan = root ? GatewayRoundPlan(plan_) : plan_;
  manager_ = std::make_unique<RoundManager>(round_plan, settings, run.run_id, run.round,
                                            std::move(run.params), MakeAggregator(round_plan),
                                            std::move(run.state));
  if (root) root_round_ = root->round;
  if (plan_.selection()) {
    // A grant unused for three heartbeats is the device's loss, not a slot's.
    uploads_.emplace(settings.upload_slots, std::max(5.0, 3.0 * options_.heartbeat_ms / 1000.0));
  }
  if (plan_.async() && run.round > 0) {
    // Updates committed before a restart must not be applied again when
    // their devices, unsure whether they arrived, send them once more.
    const auto window = static_cast<std::uint64_t>(plan_.max_staleness) + 1;
    const std::uint64_t since = run.round > window ? run.round - window : 0;
    manager_->RestoreApplied(store_->ListRounds(run.run_id, since, window));
  }
  if (!resumed_ && run.round == 0) {
    last_round_.reset();
  } else if (auto r = store_->GetRound(run.run_id, run.round)) {
    last_round_ = *r;
    if (plan_.dp()) {
      // Resuming without it would report the privacy spent so far as 0.
      if (!r->privacy.is_object()) {
        throw Error(options_.db + ": round " + std::to_string(run.round) + " of run " +
                    std::to_string(run.run_id) +
                    " has no privacy record although the run uses differential privacy: the "
                    "database is damaged");
      }
      manager_->RestorePrivacy(r->privacy);
    }
  }

  const std::size_t n = manager_->params().size();
  joins_.emplace(options_.max_joins_per_second, options_.max_joins_per_second);
  const FileLimit files = RaiseFileLimit();
  router_.set(zmq::sockopt::linger, 0);
  // libzmq drops a frame larger than the largest legal one (an update's
  // tensor) before it reaches us, and closes that connection.
  SocketLimits limits;
  // A topk frame of k entries takes at most 4 + 9k bytes (a count, float32
  // values, varint indices of up to 5 bytes): with a fraction above ~4/9
  // it can be larger than the fp32 one.
  const wire::UpdateCodec codec = wire::UpdateCodec::Parse(plan_.update_codec);
  const std::size_t topk_floats =
      codec.encoding == wire::TensorEncoding::kTopK
          ? (wire::TopKFrameBytesAtMost(codec.TopKCount(n)) + sizeof(float) - 1) / sizeof(float)
          : 0;
  limits.max_frame_bytes = MaxFrameBytes(std::max(n, topk_floats));
  limits.send_hwm = kRouterHighWaterMark;
  limits.receive_hwm = kRouterHighWaterMark;
  ApplySocketLimits(router_, limits);
  // A reply to a full queue or a vanished peer fails (and is counted)
  // instead of being dropped silently.
  router_.set(zmq::sockopt::router_mandatory, 1);
  // A fleet coming up (or back after a restart) connects all at once; with
  // libzmq's backlog of 100 the kernel drops the SYNs beyond it and those
  // devices wait out TCP's retransmission (1 s, 3 s, 7 s...).
  router_.set(zmq::sockopt::backlog, 4096);
  pub_.set(zmq::sockopt::backlog, 4096);
  pub_.set(zmq::sockopt::linger, 0);
  limits.send_hwm = 8;  // a slow subscriber misses old models, it does not pile them up
  limits.receive_hwm = -1;
  ApplySocketLimits(pub_, limits);
  monitor_ = std::make_unique<ConnectionMonitor>(context_, router_, "router");
  SetUpSecurity();
  try {
    router_.bind(options_.listen);
  } catch (const zmq::error_t& e) {
    throw Error("cannot listen on " + options_.listen + ": " + e.what());
  }
  try {
    pub_.bind(options_.publish);
  } catch (const zmq::error_t& e) {
    throw Error("cannot publish on " + options_.publish + ": " + e.what());
  }

  // What was bound, with "*" ports resolved: daemons are told these.
  bound_listen_ = router_.get(zmq::sockopt::last_endpoint);
  bound_publish_ = pub_.get(zmq::sockopt::last_endpoint);

  // The status first: a request the moment HTTP is up must not find it empty.
  PublishStatus();
  http_ = std::make_unique<HttpApi>(board_, *reader_, run.run_id, arch, options_.http_token,
                                    HttpTls{options_.http_cert, options_.http_key});
  http_->Start(options_.http);

  const auto [host, port] = ParseHostPort(options_.http);
  const std::string base = (options_.http_cert.empty() ? "http://" : "https://") +
                           (host.empty() || host == "0.0.0.0" ? std::string("127.0.0.1") : host) +
                           ":" + std::to_string(http_->port());
  log_ << "fedsgd-coordinator: run " << run.run_id
       << (resumed_ ? " resumed at round " + std::to_string(run.round) : std::string(" started"))
       << ", model " << arch.ToString() << " (" << n << " parameters), "
       << ToString(plan_.algorithm) << ", "
       << (root ? "rounds from the root at " + options_.upstream
                : std::to_string(settings.rounds) + " rounds")
       << ", waiting for " << settings.min_devices << " device(s)\n"
       << "fedsgd-coordinator: listening on " << listen_endpoint() << ", publishing on "
       << publish_endpoint() << ", database " << options_.db << "\n"
       << "fedsgd-coordinator: status: " << base << "/v1/status, dashboard: " << base << "/\n"
       << "fedsgd-coordinator: open files limit " << files.soft
       << (files.raised ? " (raised to the hard limit)" : "")
       << (files.error.empty()
               ? ""
               : " (could not raise it to " + std::to_string(files.hard) + ": " + files.error + ")")
       << ", at most " << options_.max_devices << " devices, " << options_.max_joins_per_second
       << " joins/s" << std::endl;
  if (!IsLoopbackHost(host) && options_.http_token.empty()) {
    log_ << "fedsgd-coordinator: WARNING: --insecure: HTTP on " << options_.http
         << " answers anyone without a token" << std::endl;
  }
  notifier_.Ready();
  notifier_.Status("run " + std::to_string(run.run_id) + ": waiting for devices");
}

std::string CoordinatorServer::listen_endpoint() const { return bound_listen_; }

std::string CoordinatorServer::publish_endpoint() const { return bound_publish_; }

}  // namespace fedsgd
