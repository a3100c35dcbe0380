//! Draws a [`WatchModel`] into a ratatui [`Buffer`]: a header, the
//! monitor's status, one table per group of nodes (the columns of `show
//! state`, then health and lag) and the latest events that fit, newest at
//! the bottom. Pure: the terminal and `--once` both draw through
//! [`render`].

use pgpilot_proto::NodeState;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Widget, Wrap};

use super::model::{bytes, Link, NodeView, WatchModel};
use crate::commands::show::{node_row, state_name, NODE_HEADER};

const EXTRA_HEADER: [&str; 2] = ["Health", "Lag"];
/// The most lines the monitor's status takes.
const LINK_LINES: u16 = 3;

/// The whole screen in `area`.
pub fn render(model: &WatchModel, area: Rect, buf: &mut Buffer) {
    let mut y = area.y;
    let bottom = area.y + area.height;
    let line = |l: Line, buf: &mut Buffer, y: &mut u16| {
        if *y < bottom {
            Paragraph::new(l).render(Rect::new(area.x, *y, area.width, 1), buf);
            *y += 1;
        }
    };
    line(header(model), buf, &mut y);
    // A failure's reason may be long: it wraps, on up to three lines.
    let status = link(&model.link);
    let height = (status.width().div_ceil(area.width.max(1) as usize) as u16)
        .clamp(1, LINK_LINES)
        .min(bottom.saturating_sub(y));
    Paragraph::new(status)
        .wrap(Wrap { trim: true })
        .render(Rect::new(area.x, y, area.width, height), buf);
    y += height + 1;

    let widths = column_widths(&model.nodes);
    if model.nodes.is_empty() && model.updated.is_some() {
        line(Line::from("no nodes"), buf, &mut y);
    }
    for group in groups(&model.nodes) {
        let first = &group[0].status;
        line(
            Line::styled(
                format!("formation {}, group {}", first.formation, first.group_id),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            buf,
            &mut y,
        );
        let height = (group.len() as u16 + 1).min(bottom.saturating_sub(y));
        if height == 0 {
            break;
        }
        nodes_table(group, &widths).render(Rect::new(area.x, y, area.width, height), buf);
        y += height;
    }
    y += 1;

    line(
        Line::styled("Events", Style::new().add_modifier(Modifier::BOLD)),
        buf,
        &mut y,
    );
    let room = bottom.saturating_sub(y) as usize;
    let skip = model.events.len().saturating_sub(room);
    for e in model.events.iter().skip(skip) {
        line(event_line(e), buf, &mut y);
    }
}

/// The lines [`render`] needs for `model` at most, for a plain frame.
pub fn height(model: &WatchModel) -> u16 {
    let groups = groups(&model.nodes).len();
    let lines =
        2 + LINK_LINES as usize + model.nodes.len().max(1) + 2 * groups + 2 + model.events.len();
    lines.min(u16::MAX as usize) as u16
}

/// The buffer as text, one line per row without trailing blanks: what
/// `--once` prints.
pub fn plain(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.y..area.y + area.height {
        let mut row = String::new();
        for x in area.x..area.x + area.width {
            row.push_str(buf[(x, y)].symbol());
        }
        out.push_str(row.trim_end());
        out.push('\n');
    }
    let kept = out.trim_end_matches('\n').len();
    out.truncate(kept);
    out.push('\n');
    out
}

fn header(model: &WatchModel) -> Line<'static> {
    let scope = match &model.formation {
        Some(f) => format!("formation {f}"),
        None => "every formation".into(),
    };
    let updated = model
        .updated
        .as_deref()
        .map_or(String::new(), |t| format!("  updated {t}"));
    Line::from(vec![
        Span::styled("pgpilot watch", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  {}  {scope}{updated}  ", model.monitor)),
        Span::styled("q quits", Style::new().fg(Color::DarkGray)),
    ])
}

fn link(link: &Link) -> Line<'static> {
    match link {
        Link::Connecting => Line::from("connecting to the monitor"),
        Link::Live => Line::styled("live", Style::new().fg(Color::Green)),
        Link::Unreachable(reason) => Line::styled(
            format!("monitor unreachable: {reason}; retrying"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    }
}

/// Runs of nodes of one (formation, group); the model keeps them sorted.
fn groups(nodes: &[NodeView]) -> Vec<&[NodeView]> {
    nodes
        .chunk_by(|a, b| {
            a.status.formation == b.status.formation && a.status.group_id == b.status.group_id
        })
        .collect()
}

fn cells(n: &NodeView) -> Vec<String> {
    let mut row = node_row(&n.status);
    row.push(n.status.health.clone());
    row.push(n.lag.map_or(String::new(), bytes));
    row
}

/// Every group's table has the same columns, as wide as the widest cell.
fn column_widths(nodes: &[NodeView]) -> Vec<u16> {
    let mut widths: Vec<u16> = NODE_HEADER
        .iter()
        .chain(&EXTRA_HEADER)
        .map(|h| h.chars().count() as u16)
        .collect();
    for n in nodes {
        for (w, c) in widths.iter_mut().zip(cells(n)) {
            *w = (*w).max(c.chars().count() as u16);
        }
    }
    widths
}

fn state_style(v: i32) -> Style {
    match NodeState::from_wire(v) {
        Ok(s) if s.accepts_writes() => Style::new().fg(Color::Green),
        Ok(NodeState::Secondary) => Style::new().fg(Color::Cyan),
        _ => Style::new().fg(Color::Yellow),
    }
}

fn nodes_table<'a>(group: &'a [NodeView], widths: &[u16]) -> Table<'a> {
    let header = Row::new(NODE_HEADER.iter().chain(&EXTRA_HEADER).copied())
        .style(Style::new().add_modifier(Modifier::UNDERLINED));
    let rows = group.iter().map(|n| {
        let styles = [
            Style::new(),
            Style::new(),
            Style::new(),
            Style::new(),
            Style::new(),
            state_style(n.status.reported_state),
            state_style(n.status.assigned_state),
            match n.status.health.as_str() {
                "good" => Style::new().fg(Color::Green),
                "bad" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                _ => Style::new().fg(Color::Yellow),
            },
            Style::new(),
        ];
        Row::new(
            cells(n)
                .into_iter()
                .zip(styles)
                .map(|(c, s)| Cell::from(c).style(s)),
        )
    });
    Table::new(rows, widths.iter().map(|w| Constraint::Length(*w)))
        .header(header)
        .column_spacing(2)
}

fn event_line(e: &pgpilot_proto::pb::Event) -> Line<'static> {
    // RFC 3339 in UTC: the time of day is enough on a live screen.
    let time = chrono::DateTime::parse_from_rfc3339(&e.time)
        .map_or_else(|_| e.time.clone(), |t| t.format("%H:%M:%S").to_string());
    Line::from(vec![
        Span::styled(time, Style::new().fg(Color::DarkGray)),
        Span::raw(format!(
            "  {} ({}/{})  {} -> {}  ",
            e.node_name,
            e.group_id,
            e.node_id,
            state_name(e.reported_state),
            state_name(e.assigned_state)
        )),
        Span::raw(e.description.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use pgpilot_proto::NodeState;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::super::model::tests::{event, node};
    use super::super::model::{Update, WatchModel};
    use super::*;

    fn screen(model: &WatchModel) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 20)).unwrap();
        terminal
            .draw(|f| render(model, f.area(), f.buffer_mut()))
            .unwrap();
        plain(terminal.backend().buffer())
    }

    fn row<'a>(screen: &'a str, name: &str) -> &'a str {
        screen
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{screen}"))
    }

    #[test]
    fn a_failover_on_screen() {
        let a = node(1, "a", NodeState::Primary, 0x3000_0000);
        let b = node(2, "b", NodeState::Secondary, 0x2FFF_F000);
        let mut m = WatchModel::new("http://127.0.0.1:5430".into(), None);
        m.apply(Update::Snapshot {
            nodes: vec![a.clone(), b.clone()],
            events: vec![event(1, &b, NodeState::Secondary, "node 2 is streaming")],
            at: "10:25:00 UTC".into(),
        });
        let before = screen(&m);
        assert!(
            before.contains(
                "pgpilot watch  http://127.0.0.1:5430  every formation  updated 10:25:00 UTC"
            ),
            "{before}"
        );
        assert!(before.contains("formation default, group 0"), "{before}");
        let header = before.lines().find(|l| l.contains("Host:Port")).unwrap();
        for h in [
            "Name",
            "TLI: LSN",
            "Reported State",
            "Assigned State",
            "Health",
            "Lag",
        ] {
            assert!(header.contains(h), "{header}");
        }
        assert!(row(&before, "a").contains("primary"), "{before}");
        assert!(row(&before, "a").contains("read-write"), "{before}");
        assert!(row(&before, "b").contains("secondary"), "{before}");
        assert!(row(&before, "b").contains("4.0 kB"), "{before}");
        assert!(
            before.contains("10:25:01  b (0/2)  secondary -> secondary  node 2 is streaming"),
            "{before}"
        );

        // a dies: the monitor says so, then promotes b.
        let mut dead = a.clone();
        dead.health = "bad".into();
        m.apply(Update::Event(event(
            2,
            &a,
            NodeState::Demoted,
            "node 1 is unhealthy",
        )));
        let mut promoted = b.clone();
        promoted.reported_state = NodeState::WaitPrimary as i32;
        promoted.assigned_state = NodeState::WaitPrimary as i32;
        m.apply(Update::Event(event(
            3,
            &promoted,
            NodeState::WaitPrimary,
            "failover: node 2 promoted",
        )));
        m.apply(Update::Snapshot {
            nodes: vec![
                pgpilot_proto::pb::NodeStatus {
                    assigned_state: NodeState::Demoted as i32,
                    ..dead
                },
                promoted,
            ],
            events: vec![],
            at: "10:25:09 UTC".into(),
        });
        let after = screen(&m);
        assert!(row(&after, "a").contains("read-write !"), "{after}");
        assert!(row(&after, "a").contains("demoted"), "{after}");
        assert!(row(&after, "a").contains("bad"), "{after}");
        assert!(row(&after, "b").contains("wait_primary"), "{after}");
        assert!(
            !row(&after, "b").contains("kB"),
            "the writer has no lag: {after}"
        );
        let events: Vec<_> = after
            .lines()
            .skip_while(|l| *l != "Events")
            .skip(1)
            .collect();
        assert_eq!(events.len(), 3, "{after}");
        assert!(
            events[2].ends_with("b (0/2)  wait_primary -> wait_primary  failover: node 2 promoted"),
            "{after}"
        );
    }

    #[test]
    fn unreachable_is_said_and_the_latest_events_fit() {
        let a = node(1, "a", NodeState::Single, 1);
        let mut m = WatchModel::new("http://m".into(), Some("default".into()));
        m.apply(Update::Snapshot {
            nodes: vec![a.clone()],
            events: (1..=40)
                .map(|i| event(i, &a, NodeState::Single, &format!("event {i}")))
                .collect(),
            at: "t".into(),
        });
        m.apply(Update::Unreachable("transport error".into()));
        let s = screen(&m);
        let long = "cannot reach the monitor at http://127.0.0.1:5430: transport error; \
                    check that it runs (`pgpilot run --pgdata DIR` on its machine) and listens there";
        m.apply(Update::Unreachable(long.into()));
        let wrapped = screen(&m);
        let status: Vec<_> = wrapped
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(status.len(), 2, "{wrapped}");
        assert!(status[1].ends_with("listens there; retrying"), "{wrapped}");
        assert!(s.contains("formation default  updated t"), "{s}");
        assert!(
            s.lines().nth(1) == Some("monitor unreachable: transport error; retrying"),
            "{s}"
        );
        assert_eq!(s.lines().count(), 20, "{s}");
        assert!(s.lines().last().unwrap().ends_with("event 40"), "{s}");
        assert!(!s.contains("event 1\n"), "the oldest do not fit: {s}");
    }

    #[test]
    fn a_small_terminal_gets_what_fits() {
        let a = node(1, "a", NodeState::Primary, 1);
        let mut m = WatchModel::new("http://m".into(), None);
        m.apply(Update::Snapshot {
            nodes: vec![a.clone(), node(2, "b", NodeState::Secondary, 1)],
            events: vec![event(1, &a, NodeState::Primary, "x")],
            at: "t".into(),
        });
        m.apply(Update::Unreachable(
            "a reason long enough to wrap many times over".into(),
        ));
        for (w, h) in [(1, 1), (10, 3), (30, 5), (80, 8)] {
            let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
            terminal
                .draw(|f| render(&m, f.area(), f.buffer_mut()))
                .unwrap();
        }
    }

    #[test]
    fn a_plain_frame_fits_its_height() {
        let a = node(1, "a", NodeState::Single, 1);
        let mut m = WatchModel::new("http://m".into(), None);
        m.apply(Update::Snapshot {
            nodes: vec![a.clone()],
            events: vec![
                event(1, &a, NodeState::Single, "first"),
                event(2, &a, NodeState::Single, "last"),
            ],
            at: "t".into(),
        });
        let area = Rect::new(0, 0, 100, height(&m));
        let mut buf = Buffer::empty(area);
        render(&m, area, &mut buf);
        let text = plain(&buf);
        assert!(text.ends_with("last\n"), "{text}");
        assert!(text.contains("first"), "{text}");
    }
}
