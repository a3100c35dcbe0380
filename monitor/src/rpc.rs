//! The gRPC service: decodes requests, calls [`Control`], encodes answers.

use std::pin::Pin;

use pgpilot_proto::pb::{self, monitor_server::Monitor};
use tokio_stream::{wrappers::BroadcastStream, Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::control::Control;

pub struct MonitorService {
    control: Control,
}

impl MonitorService {
    pub fn new(control: Control) -> Self {
        MonitorService { control }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

fn now() -> chrono::DateTime<chrono::Utc> {
    crate::clock::now()
}

#[tonic::async_trait]
impl Monitor for MonitorService {
    #[instrument(skip_all, fields(formation = %req.get_ref().formation, host = %req.get_ref().host, port = req.get_ref().port))]
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let reply = self
            .control
            .register(req.into_inner(), now())
            .await
            .inspect_err(|e| {
                tracing::info!("refused registration: {e:#}");
            })?;
        Ok(Response::new(reply))
    }

    #[instrument(skip_all, fields(node_id = req.get_ref().node_id, generation = req.get_ref().generation_seen))]
    async fn node_active(
        &self,
        req: Request<pb::NodeActiveRequest>,
    ) -> Result<Response<pb::NodeActiveResponse>, Status> {
        let started = std::time::Instant::now();
        // The layer checked the credential; here, that it is this node's.
        let result = match crate::auth::caller(&req)
            .and_then(|caller| crate::auth::acting_for(caller, req.get_ref().node_id))
        {
            Ok(()) => self.control.node_active(req.into_inner(), now()).await,
            Err(refused) => {
                tracing::info!("refused report: {}", refused.message());
                self.control.metrics.node_active(false, started.elapsed());
                return Err(refused);
            }
        };
        self.control
            .metrics
            .node_active(result.is_ok(), started.elapsed());
        let reply = result.inspect_err(|e| {
            tracing::info!("refused report: {e:#}");
        })?;
        Ok(Response::new(reply))
    }

    type WatchStream = EventStream;

    #[instrument(skip_all, fields(formation = %req.get_ref().formation))]
    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = crate::auth::caller(&req)?;
        let req = req.into_inner();
        // Subscribed before the node is looked up: a drop in between is
        // then an event on this stream, which ends it.
        let events = self.control.bus.subscribe();
        if let crate::auth::Caller::Node(id) = caller {
            let home =
                self.control.store.group_of(id).await.map_err(|e| {
                    Status::unavailable(format!("could not look node {id} up: {e:#}"))
                })?;
            crate::auth::watch_scope(
                caller,
                home.as_ref().map(|(f, g)| (f.as_str(), *g)),
                &req.formation,
                req.group_id,
            )?;
        }
        // A node's stream ends with the first of its group's events after
        // it was dropped (the drop's own event: credentials are revoked
        // before events are published), so a revoked credential does not
        // keep following the group on a stream opened before.
        let keys = self.control.keys.clone();
        let watcher = match caller {
            crate::auth::Caller::Node(id) => Some(id),
            _ => None,
        };
        let stream = BroadcastStream::new(events).filter_map(move |item| match item {
            Ok(event)
                if (req.formation.is_empty() || event.formation == req.formation)
                    && req.group_id.is_none_or(|g| g == event.group_id) =>
            {
                match watcher {
                    Some(id) if !keys.has_node(id) => Some(Err(Status::unauthenticated(format!(
                        "node {id} was dropped: its credential is revoked"
                    )))),
                    _ => Some(Ok(event)),
                }
            }
            Ok(_) => None,
            // A lagging watcher skipped events; it polls anyway, so keep
            // the stream open rather than forcing a reconnect.
            Err(_lagged) => None,
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn show_state(
        &self,
        req: Request<pb::ShowStateRequest>,
    ) -> Result<Response<pb::ShowStateResponse>, Status> {
        Ok(Response::new(
            self.control.show_state(&req.into_inner().formation).await?,
        ))
    }

    async fn show_events(
        &self,
        req: Request<pb::ShowEventsRequest>,
    ) -> Result<Response<pb::ShowEventsResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(
            self.control.show_events(&req.formation, req.count).await?,
        ))
    }

    async fn show_uri(
        &self,
        req: Request<pb::ShowUriRequest>,
    ) -> Result<Response<pb::ShowUriResponse>, Status> {
        Ok(Response::new(
            self.control.show_uri(&req.into_inner().formation).await?,
        ))
    }

    async fn show_settings(
        &self,
        req: Request<pb::ShowSettingsRequest>,
    ) -> Result<Response<pb::ShowSettingsResponse>, Status> {
        Ok(Response::new(
            self.control
                .show_settings(&req.into_inner().formation)
                .await?,
        ))
    }

    #[instrument(skip_all, fields(node_id = req.get_ref().node_id))]
    async fn drop_node(
        &self,
        req: Request<pb::DropNodeRequest>,
    ) -> Result<Response<pb::DropNodeResponse>, Status> {
        crate::auth::acting_for(crate::auth::caller(&req)?, req.get_ref().node_id)?;
        let req = req.into_inner();
        self.control
            .drop_node(req.node_id, req.force, now())
            .await?;
        Ok(Response::new(pb::DropNodeResponse {}))
    }

    #[instrument(skip_all, fields(formation = %req.get_ref().formation, candidate = %req.get_ref().candidate, peer = %peer(&req)))]
    async fn perform_switchover(
        &self,
        req: Request<pb::PerformSwitchoverRequest>,
    ) -> Result<Response<pb::PerformSwitchoverResponse>, Status> {
        let req = req.into_inner();
        let formation = required("formation", &req.formation, "--formation NAME")?;
        let candidate = (!req.candidate.is_empty()).then_some(req.candidate.as_str());
        let started = self
            .control
            .perform_switchover(formation, candidate, now())
            .await
            .inspect_err(|e| tracing::info!("refused switchover: {e:#}"))?;
        Ok(Response::new(switchover_response(started)))
    }

    #[instrument(skip_all, fields(formation = %req.get_ref().formation, allow_data_loss = req.get_ref().allow_data_loss, peer = %peer(&req)))]
    async fn perform_failover(
        &self,
        req: Request<pb::PerformFailoverRequest>,
    ) -> Result<Response<pb::PerformSwitchoverResponse>, Status> {
        let req = req.into_inner();
        let formation = required("formation", &req.formation, "--formation NAME")?;
        let started = self
            .control
            .perform_failover(formation, req.allow_data_loss, now())
            .await
            .inspect_err(|e| tracing::info!("refused failover: {e:#}"))?;
        if req.allow_data_loss {
            tracing::warn!(
                "perform failover --allow-data-loss accepted: acknowledged commits may be lost"
            );
        }
        Ok(Response::new(switchover_response(started)))
    }

    #[instrument(skip_all, fields(formation = %req.get_ref().formation, name = %req.get_ref().name, peer = %peer(&req)))]
    async fn perform_promotion(
        &self,
        req: Request<pb::PerformPromotionRequest>,
    ) -> Result<Response<pb::PerformSwitchoverResponse>, Status> {
        let req = req.into_inner();
        let formation = required("formation", &req.formation, "--formation NAME")?;
        let name = required("node name", &req.name, "--name NODE")?;
        let started = self
            .control
            .perform_promotion(formation, name, now())
            .await
            .inspect_err(|e| tracing::info!("refused promotion: {e:#}"))?;
        Ok(Response::new(switchover_response(started)))
    }

    #[instrument(skip_all, fields(formation = %req.get_ref().formation, name = %req.get_ref().name, priority = req.get_ref().candidate_priority, peer = %peer(&req)))]
    async fn set_candidate_priority(
        &self,
        req: Request<pb::SetCandidatePriorityRequest>,
    ) -> Result<Response<pb::SetSettingResponse>, Status> {
        let req = req.into_inner();
        let formation = required("formation", &req.formation, "--formation NAME")?;
        let name = required("node name", &req.name, "--name NODE")?;
        let group_id = self
            .control
            .set_candidate_priority(formation, name, req.candidate_priority, now())
            .await
            .inspect_err(|e| tracing::info!("refused candidate priority: {e:#}"))?;
        Ok(Response::new(pb::SetSettingResponse { group_id }))
    }

    #[instrument(skip_all, fields(formation = %req.get_ref().formation, name = %req.get_ref().name, enable = req.get_ref().enable, peer = %peer(&req)))]
    async fn set_maintenance(
        &self,
        req: Request<pb::SetMaintenanceRequest>,
    ) -> Result<Response<pb::SetSettingResponse>, Status> {
        let req = req.into_inner();
        let formation = required("formation", &req.formation, "--formation NAME")?;
        let name = required("node name", &req.name, "--name NODE")?;
        let group_id = self
            .control
            .set_maintenance(formation, name, req.enable, req.allow_failover, now())
            .await
            .inspect_err(|e| tracing::info!("refused maintenance: {e:#}"))?;
        Ok(Response::new(pb::SetSettingResponse { group_id }))
    }

    #[instrument(skip_all, fields(formation = %req.get_ref().formation, name = %req.get_ref().name, quorum = req.get_ref().replication_quorum, peer = %peer(&req)))]
    async fn set_replication_quorum(
        &self,
        req: Request<pb::SetReplicationQuorumRequest>,
    ) -> Result<Response<pb::SetSettingResponse>, Status> {
        let req = req.into_inner();
        let formation = required("formation", &req.formation, "--formation NAME")?;
        let name = required("node name", &req.name, "--name NODE")?;
        let group_id = self
            .control
            .set_replication_quorum(formation, name, req.replication_quorum, now())
            .await
            .inspect_err(|e| tracing::info!("refused replication quorum: {e:#}"))?;
        Ok(Response::new(pb::SetSettingResponse { group_id }))
    }

    #[instrument(skip_all, fields(formation = %req.get_ref().formation, n = req.get_ref().number_sync_standbys, peer = %peer(&req)))]
    async fn set_number_sync_standbys(
        &self,
        req: Request<pb::SetNumberSyncStandbysRequest>,
    ) -> Result<Response<pb::SetSettingResponse>, Status> {
        let req = req.into_inner();
        let formation = required("formation", &req.formation, "--formation NAME")?;
        let group_id = self
            .control
            .set_number_sync_standbys(formation, req.number_sync_standbys, now())
            .await
            .inspect_err(|e| tracing::info!("refused number_sync_standbys: {e:#}"))?;
        Ok(Response::new(pb::SetSettingResponse { group_id }))
    }

    #[instrument(skip_all, fields(peer = %peer(&req)))]
    async fn rotate_join_token(
        &self,
        req: Request<pb::RotateJoinTokenRequest>,
    ) -> Result<Response<pb::RotateJoinTokenResponse>, Status> {
        let by = crate::auth::caller(&req)?.describe();
        let token = self.control.keys.rotate_join_token().map_err(|e| {
            tracing::error!("failed to rotate the join token: {e:#}");
            Status::internal(format!("could not write the new join token: {e:#}"))
        })?;
        tracing::info!("{by} rotated the join token: the old one no longer registers nodes");
        Ok(Response::new(pb::RotateJoinTokenResponse {
            join_token: token.to_text(),
        }))
    }

    #[instrument(skip_all, fields(formation = %req.get_ref().formation, peer = %peer(&req)))]
    async fn rotate_replication_password(
        &self,
        req: Request<pb::RotateReplicationPasswordRequest>,
    ) -> Result<Response<pb::RotateReplicationPasswordResponse>, Status> {
        let by = crate::auth::caller(&req)?.describe();
        let req = req.into_inner();
        let formation = required("formation", &req.formation, "--formation NAME")?;
        let (generation, group_id) = self
            .control
            .rotate_replication_password(formation, &by, now())
            .await
            .inspect_err(|e| tracing::info!("refused replication password rotation: {e:#}"))?;
        Ok(Response::new(pb::RotateReplicationPasswordResponse {
            generation,
            group_id,
        }))
    }
}

/// Where a request came from, for the log line of its handler.
fn peer<T>(req: &Request<T>) -> String {
    req.remote_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// A field the request must carry: empty is refused, naming the flag.
fn required<'a>(what: &str, value: &'a str, flag: &str) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        return Err(crate::error::MonitorError::InvalidArgument(format!(
            "the {what} is empty: pass {flag}"
        ))
        .into());
    }
    Ok(value)
}

fn switchover_response(s: crate::control::SwitchoverStarted) -> pb::PerformSwitchoverResponse {
    let (old_primary_id, old_primary_name) = s.old_primary.unwrap_or_default();
    pb::PerformSwitchoverResponse {
        old_primary_id,
        old_primary_name,
        group_id: s.group_id,
    }
}
