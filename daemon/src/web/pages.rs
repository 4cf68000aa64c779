//! The page frame and the pieces pages share. maud escapes every value it interpolates, so
//! text from the index (descriptions, reasons) cannot become markup.

use maud::{html, Markup, DOCTYPE};

use super::auth::SessionView;
use crate::config::Role;

/// The style sheet (`/static/fiona.css`): system fonts, high contrast, one column on a
/// narrow window.
pub const CSS: &str = r#"
:root { color-scheme: light; --fg: #111; --bg: #fff; --muted: #444; --line: #bbb; --accent: #0b4f8a; --bad: #9b1111; --good: #0c5a1e; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
header { background: #0b2f52; color: #fff; padding: .5rem 1rem; display: flex; flex-wrap: wrap; gap: .25rem 1rem; align-items: center; }
header a, header button { color: #fff; }
header .brand { font-weight: 700; margin-right: 1rem; }
nav ul { list-style: none; display: flex; flex-wrap: wrap; gap: .25rem 1rem; margin: 0; padding: 0; }
nav a[aria-current=page] { font-weight: 700; text-decoration-thickness: 3px; }
header .who { margin-left: auto; display: flex; gap: .5rem; align-items: center; }
main { padding: 1rem; max-width: 80rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.2rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef2f6; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.compact { width: auto; min-width: 20rem; }
.scroll { overflow-x: auto; }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus, textarea:focus { outline: 3px solid #f5a623; outline-offset: 2px; }
form.inline { display: inline; }
label { display: block; font-weight: 600; margin-top: .75rem; }
input, select, textarea, button { font: inherit; padding: .35rem .5rem; border: 1px solid #666; border-radius: 3px; }
input[type=checkbox] { width: auto; }
button, .button { background: var(--accent); color: #fff; border-color: var(--accent); cursor: pointer; margin-top: .75rem; }
header button { background: transparent; border: 1px solid #fff; margin: 0; }
.hint { color: var(--muted); font-size: .9rem; }
.error { color: var(--bad); font-weight: 600; }
.ok { color: var(--good); font-weight: 600; }
.warn { color: #8a5a00; font-weight: 600; }
.box { border: 1px solid var(--line); padding: .5rem 1rem; margin: .5rem 0 1rem; border-radius: 4px; }
.filters { display: flex; flex-wrap: wrap; gap: 0 1rem; align-items: end; }
.state-verified { color: var(--good); font-weight: 600; }
.state-failed, .state-parked { color: var(--bad); font-weight: 600; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.kv dt { font-weight: 600; }
dl.kv dd { margin: 0; }
@media (max-width: 40rem) { main { padding: .5rem; } th, td { padding: .25rem; } header .who { margin-left: 0; } }
"#;

/// Which page the navigation marks as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Status,
    Assign,
    Coupling,
    Transfers,
    Review,
    Audit,
    Users,
    None,
}

/// A whole page: title (fixed text, never a value from the index), navigation by role,
/// the logout form, the body. `refresh` adds `<meta http-equiv=refresh>` (live state
/// without JavaScript).
pub fn page(
    title: &str,
    nav: Nav,
    who: Option<&SessionView>,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh {
                    meta http-equiv="refresh" content=(s);
                }
                title { (title) " · fiona" }
                link rel="stylesheet" href="/static/fiona.css";
            }
            body {
                header {
                    span.brand { "fiona" }
                    @if let Some(w) = who {
                        nav aria-label="Main" {
                            ul {
                                (item("/", "Status", nav == Nav::Status))
                                @if w.identity.grants.admin || w.identity.grants.roles.values().any(|r| *r >= Role::Assigner) {
                                    (item("/assign", "Assign", nav == Nav::Assign))
                                    (item("/coupling", "Coupling lists", nav == Nav::Coupling))
                                }
                                (item("/transfers", "Transfers", nav == Nav::Transfers))
                                @if w.identity.grants.admin || w.identity.grants.roles.values().any(|r| *r >= Role::Manager) {
                                    (item("/review", "Review", nav == Nav::Review))
                                    (item("/audit", "Audit", nav == Nav::Audit))
                                }
                                @if w.identity.grants.admin {
                                    (item("/admin/users", "Users", nav == Nav::Users))
                                }
                            }
                        }
                        div.who {
                            span { "Signed in as " strong { (w.identity.name) } }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(w.csrf);
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn item(href: &str, text: &str, current: bool) -> Markup {
    html! {
        li {
            @if current {
                a href=(href) aria-current="page" { (text) }
            } @else {
                a href=(href) { (text) }
            }
        }
    }
}

/// The hidden CSRF field every form that changes something carries.
pub fn csrf(s: &SessionView) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A time (Unix ms) as `YYYY-MM-DD HH:MM:SS` UTC; empty for 0.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let s = crate::clock::iso_ms(ms);
    s.get(..19).unwrap_or(&s).replace('T', " ")
}

/// A DICOM date (YYYYMMDD) and time (HHMMSS...) as `YYYY-MM-DD HH:MM`.
pub fn dicom_date_time(d: &str, t: &str) -> String {
    let d = d.trim();
    let t = t.trim();
    let date = if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
    } else {
        d.to_string()
    };
    let time = if t.len() >= 4 && t.bytes().take(4).all(|b| b.is_ascii_digit()) {
        format!("{}:{}", &t[..2], &t[2..4])
    } else {
        String::new()
    };
    format!("{date} {time}").trim().to_string()
}

/// Page links (`?page=N` plus the other query parameters given).
pub fn pager(base: &str, query: &str, page: usize, pages: usize) -> Markup {
    let link = |p: usize| {
        if query.is_empty() {
            format!("{base}?page={p}")
        } else {
            format!("{base}?{query}&page={p}")
        }
    };
    html! {
        @if pages > 1 {
            nav aria-label="Pages" {
                p {
                    @if page > 1 { a href=(link(page - 1)) { "Previous" } " " }
                    "Page " (page) " of " (pages)
                    @if page < pages { " " a href=(link(page + 1)) { "Next" } }
                }
            }
        }
    }
}
