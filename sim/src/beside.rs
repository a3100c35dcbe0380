//! Steps that take a while (a big copy, a rewind) with reports beside
//! them, driven the way the agent drives them (keeper/src/agent/beside.rs):
//! every beat the keeper observes PostgreSQL and reports, and the
//! engine's verdict on each reply ([`Engine::on_reply_beside`]) decides
//! whether the steps go on, are abandoned, or the node fences. The steps'
//! effect happens when they end; nothing else starts meanwhile.
//!
//! [`Engine::on_reply_beside`]: pgpilot_keeper::engine::Engine::on_reply_beside

use pgpilot_keeper::engine::Beside;
use pgpilot_keeper::plan::{Goal, Step};
use pgpilot_proto::NodeState;

use super::{World, TICK_MS};

/// Steps parked on a long one.
#[derive(Clone, Debug)]
pub struct Running {
    from: NodeState,
    goal: Goal,
    /// The long step first, then the rest.
    rest: Vec<Step>,
    /// When the long step ends; `None` for an announcement
    /// ([`Step::Announce`]), which ends once the monitor confirmed it.
    done_at: Option<u64>,
}

impl World {
    /// The long first step of `rest` takes `takes` ms.
    pub(super) fn park(
        &mut self,
        i: usize,
        from: NodeState,
        goal: Goal,
        rest: Vec<Step>,
        takes: Option<u64>,
    ) {
        let id = self.nodes[i].id;
        match takes {
            Some(takes) => self.log(format!(
                "node {id}: {from} -> {}: {:?} takes {takes} ms, reporting beside it",
                goal.state, rest[0]
            )),
            None => self.log(format!(
                "node {id}: {from} -> {}: announces its start, waiting for the monitor's word",
                goal.state
            )),
        }
        self.engine(i).steps_started(&goal);
        if takes.is_none() {
            let now = self.mono(i, self.now);
            self.engine(i).announce_started(now);
        }
        let k = &mut self.nodes[i].keeper;
        k.running = Some(Running {
            from,
            goal,
            rest,
            done_at: takes.map(|t| self.now + t),
        });
        k.next_at = self.now + TICK_MS;
    }

    /// One beat beside the parked steps, or their end.
    pub(super) fn beside_tick(&mut self, i: usize) {
        let (id, now) = (self.nodes[i].id, self.now);
        let confirmed = self.engine(i).announce_confirmed();
        let done = self.nodes[i]
            .keeper
            .running
            .as_ref()
            .is_some_and(|r| r.done_at.map_or(confirmed, |t| now >= t));
        if done {
            let r = self.nodes[i].keeper.running.take().expect("checked");
            return self.run_steps(i, r.from, r.goal, r.rest, None, true);
        }
        self.observe(i);
        let reply = self.report(i);
        if self.nodes[i].keeper.gone {
            return;
        }
        let mono_now = self.mono(i, now);
        let verdict = match reply {
            Some((sent_at, reply)) => self.engine(i).on_reply_beside(sent_at, mono_now, reply),
            None if self.engine(i).on_no_reply(mono_now) => {
                Beside::Fence("the lease expired while a step ran".into())
            }
            None => Beside::Continue,
        };
        self.nodes[i].keeper.save();
        match verdict {
            Beside::Continue | Beside::Deferred(_) | Beside::Ignore(_)
                if self.engine(i).announce_confirmed() =>
            {
                // Goes on at once, as the agent does.
                self.nodes[i].keeper.next_at = now + TICK_MS;
                return;
            }
            Beside::Continue | Beside::Deferred(_) | Beside::Ignore(_) => {}
            Beside::Abandon(why) => {
                self.nodes[i].keeper.running = None;
                self.log(format!("node {id}: {why}"));
                self.engine(i).transition_failed(why);
                self.nodes[i].keeper.save();
                self.nodes[i].keeper.next_at = now + TICK_MS;
                return;
            }
            Beside::Fence(why) => {
                self.nodes[i].keeper.running = None;
                self.log(format!("node {id}: {why}"));
                self.engine(i).steps_ended();
                if self.engine(i).state().current.accepts_writes() {
                    self.fence(i);
                }
                self.nodes[i].keeper.save();
                self.schedule(i);
                return;
            }
        }
        let last_sent = self.nodes[i].keeper.last_sent;
        let wait = self.engine(i).beat_wait(mono_now, last_sent);
        self.nodes[i].keeper.next_at = now + super::ms(wait).max(TICK_MS);
    }
}
