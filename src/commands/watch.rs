//! `pgpilot watch`: a live terminal view of the monitor's nodes and
//! events. This module is the I/O shell: it follows the monitor (the
//! Watch stream wakes it, a timer and reconnects cover what the stream
//! misses), reads keys and draws; what is shown is [`model`], how it is
//! drawn is [`view`], both pure.

mod model;
mod view;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context};
use pgpilot_proto::pb;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{
    self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers,
};
use ratatui::layout::Rect;
use tokio::sync::mpsc;

use model::{Update, WatchModel, EVENTS_KEPT};

use super::{connect, monitor_target, status_error};
use crate::cli::WatchArgs;

/// How often `show state` is read when no event arrives: the Watch
/// stream skips events for a client that fell behind, and lag changes
/// without events.
const POLL: Duration = Duration::from_secs(1);
/// How long one request may take before the monitor counts as
/// unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between two connection attempts.
const RETRY: Duration = Duration::from_secs(1);
/// Width of a `--once` frame when stdout is no terminal.
const PLAIN_WIDTH: u16 = 120;
/// How many events a `--once` frame shows.
const ONCE_EVENTS: u32 = 10;

pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    if args.target.json {
        bail!(
            "watch has no --json: use `pgpilot show state --json` and `pgpilot show events --json`"
        );
    }
    let (uri, _) = monitor_target(&args.target)?;
    let mut model = WatchModel::new(uri, args.formation.clone());
    if args.once {
        // The first snapshot of a session is the frame.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let snapshot = tokio::select! {
            failed = session(&args, &tx, ONCE_EVENTS) => {
                failed?;
                bail!("the monitor's answer got lost");
            }
            Some(update) = rx.recv() => update,
        };
        model.apply(snapshot);
        let width = if std::io::stdout().is_terminal() {
            ratatui::crossterm::terminal::size().map_or(PLAIN_WIDTH, |(w, _)| w)
        } else {
            PLAIN_WIDTH
        };
        let area = Rect::new(0, 0, width, view::height(&model));
        let mut buf = Buffer::empty(area);
        view::render(&model, area, &mut buf);
        print!("{}", view::plain(&buf));
        return Ok(());
    }
    if !std::io::stdout().is_terminal() {
        bail!(
            "pgpilot watch draws on a terminal and stdout is not one: run it in a terminal, \
             or pass --once to print one frame as plain text"
        );
    }

    let (updates_tx, mut updates) = mpsc::unbounded_channel();
    let follower = tokio::spawn(follow(args, updates_tx));
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    // The guard leaves raw mode and the alternate screen on every return
    // (also when the set-up fails half-way); a panic is covered by the
    // hook `ratatui::try_init` installs before the one of `main`.
    let _restore = Restore;
    let mut terminal = ratatui::try_init().context("set up the terminal")?;
    std::thread::spawn(move || read_keys(keys_tx));
    let quit = quit_signal()?;
    tokio::pin!(quit);
    let result = loop {
        if let Err(e) = terminal.draw(|f| view::render(&model, f.area(), f.buffer_mut())) {
            break Err(anyhow::Error::new(e).context("draw on the terminal"));
        }
        tokio::select! {
            key = keys.recv() => match key {
                Some(Ok(Key::Quit)) => break Ok(()),
                Some(Ok(Key::Redraw)) => {}
                Some(Err(e)) => break Err(e.context("read the terminal's keys")),
                None => break Ok(()),
            },
            Some(update) = updates.recv() => model.apply(update),
            _ = &mut quit => break Ok(()),
        }
    };
    follower.abort();
    result
}

/// Leaves raw mode and the alternate screen.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Resolves on SIGTERM, SIGINT or SIGHUP (raw mode turns Ctrl-C into a
/// key, but `kill` and a closed terminal still come as signals).
fn quit_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("install the SIGHUP handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Key {
    Quit,
    Redraw,
}

/// `q`, Esc and Ctrl-C quit; a resize redraws; the rest is ignored.
fn key(event: &TermEvent) -> Option<Key> {
    match event {
        TermEvent::Key(KeyEvent {
            code,
            modifiers,
            kind: KeyEventKind::Press,
            ..
        }) => match code {
            KeyCode::Char('q') | KeyCode::Esc => Some(Key::Quit),
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Quit),
            _ => None,
        },
        TermEvent::Resize(..) => Some(Key::Redraw),
        _ => None,
    }
}

/// Runs on a thread of its own (crossterm's reads block) until the
/// receiver is gone or the terminal fails.
fn read_keys(tx: mpsc::UnboundedSender<anyhow::Result<Key>>) {
    loop {
        let next = match event::poll(Duration::from_millis(200)) {
            Ok(false) => continue,
            Ok(true) => match event::read() {
                Ok(e) => key(&e).map(Ok),
                Err(e) => Some(Err(e.into())),
            },
            Err(e) => Some(Err(e.into())),
        };
        let failed = matches!(next, Some(Err(_)));
        if let Some(k) = next {
            if tx.send(k).is_err() || failed {
                return;
            }
        } else if tx.is_closed() {
            return;
        }
    }
}

/// Follows the monitor until the receiver is gone: a snapshot on
/// connect, on every Watch event and every [`POLL`]; on any failure an
/// [`Update::Unreachable`] and a new connection after [`RETRY`].
async fn follow(args: WatchArgs, tx: mpsc::UnboundedSender<Update>) {
    loop {
        let reason = match session(&args, &tx, EVENTS_KEPT as u32).await {
            Ok(()) => return,
            Err(e) => format!("{e:#}"),
        };
        if tx.send(Update::Unreachable(reason)).is_err() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One connection, sending a snapshot with the latest `event_count` events on
/// connect, on every Watch event and every [`POLL`]: returns `Ok` when the
/// receiver is gone, an error when the monitor failed.
async fn session(
    args: &WatchArgs,
    tx: &mpsc::UnboundedSender<Update>,
    event_count: u32,
) -> anyhow::Result<()> {
    let formation = args.formation.clone().unwrap_or_default();
    let mut client = within(connect(&args.target)).await??;
    // Subscribe before the first snapshot: nothing between them is missed.
    let mut stream = within(client.watch(pb::WatchRequest {
        formation: formation.clone(),
        group_id: None,
    }))
    .await?
    .map_err(status_error)?
    .into_inner();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut state_client = client.clone();
        let (nodes, events) = within(async {
            tokio::try_join!(
                state_client.show_state(pb::ShowStateRequest {
                    formation: formation.clone(),
                }),
                client.show_events(pb::ShowEventsRequest {
                    formation: formation.clone(),
                    count: event_count,
                }),
            )
        })
        .await?
        .map_err(status_error)?;
        let snapshot = Update::Snapshot {
            nodes: nodes.into_inner().nodes,
            events: events.into_inner().events,
            at: now(),
        };
        if tx.send(snapshot).is_err() {
            return Ok(());
        }
        tokio::select! {
            _ = tick.tick() => {}
            message = stream.message() => match message {
                Ok(Some(e)) => {
                    if tx.send(Update::Event(e)).is_err() {
                        return Ok(());
                    }
                    tick.reset();
                }
                Ok(None) => bail!("the monitor ended the watch stream"),
                Err(s) => bail!("the watch stream broke: {}", s.message()),
            },
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// `f`, or an error once [`REQUEST_TIMEOUT`] passed.
async fn within<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}"))
}

fn now() -> String {
    chrono::Utc::now().format("%H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use ratatui::crossterm::event::{KeyEventState, KeyModifiers};

    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> TermEvent {
        TermEvent::Key(KeyEvent {
            code,
            modifiers,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let none = KeyModifiers::NONE;
        assert_eq!(key(&press(KeyCode::Char('q'), none)), Some(Key::Quit));
        assert_eq!(key(&press(KeyCode::Esc, none)), Some(Key::Quit));
        assert_eq!(
            key(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Quit)
        );
        assert_eq!(key(&press(KeyCode::Char('c'), none)), None);
        assert_eq!(key(&TermEvent::Resize(80, 24)), Some(Key::Redraw));
    }
}
