//! `fiona user list|add|passwd|roles|disable|enable` (local web accounts, through the control
//! API) and `fiona user hash` (an Argon2id hash for `[[web.accounts]]`, no daemon).
//!
//! A password is never an argument: it is read from standard input, asked twice without echo
//! on a terminal, else taken as one line (so scripts can pipe it). The daemon checks it
//! (`password::check_new_password`) and keeps only its hash; accounts of the configuration are
//! listed but changed only in the configuration.

use std::io::{BufRead, IsTerminal};

use clap::{Args, Subcommand};

use super::output::{iso_ms, print_json};
use super::table::{Align, Table};
use super::{show, Global};
use crate::config::{Grants, Role};
use crate::control::api::{UserAddBody, UserChange, UserOutcome, UserView};
use crate::control::client::{call, Call, ClientError};

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Web accounts: local ones (`fiona user add`) and those of the configuration
    /// (`[[web.accounts]]`), with their roles and state. Never a password hash.
    List,
    /// Add a local web account. The password is read from stdin: asked twice without echo on
    /// a terminal, else one line (at least 12 characters).
    Add {
        name: String,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Set a local account's password, read from stdin as for `add`. The account's web
    /// sessions end.
    Passwd { name: String },
    /// Replace a local account's roles with those given (none: the account keeps its name and
    /// password but may do nothing until given a role).
    Roles {
        name: String,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Disable a local account: it cannot log in, and its web sessions end.
    Disable { name: String },
    /// Enable a disabled local account again.
    Enable { name: String },
    /// Print an Argon2id hash of a password read from stdin (as for `add`), for
    /// `password_hash` of a `[[web.accounts]]` entry. Needs no daemon.
    Hash {
        /// The account's name, if known: the password may not be the name.
        name: Option<String>,
    },
}

/// `--admin` and `--role PROJECT=ROLE`, repeated.
#[derive(Args, Debug, Clone)]
pub struct GrantArgs {
    /// Administrator: every project, plus users, rejected and parked instances.
    #[arg(long)]
    admin: bool,
    /// A role in one project: PROJECT=viewer, PROJECT=assigner or PROJECT=manager (each
    /// includes the ones before it). Repeat for more projects.
    #[arg(long = "role", value_name = "PROJECT=ROLE", value_parser = parse_role)]
    roles: Vec<(String, Role)>,
}

/// `PROJECT=ROLE`.
fn parse_role(s: &str) -> Result<(String, Role), String> {
    let (p, r) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected PROJECT=ROLE, e.g. PROJ1=assigner"))?;
    if p.is_empty() {
        return Err(format!("`{s}`: the project is missing (PROJECT=ROLE)"));
    }
    let role =
        Role::parse(r).ok_or_else(|| format!("`{r}` is not a role (viewer, assigner, manager)"))?;
    Ok((p.to_string(), role))
}

impl GrantArgs {
    fn grants(&self) -> Result<Grants, String> {
        let mut g = Grants {
            admin: self.admin,
            ..Grants::default()
        };
        for (p, r) in &self.roles {
            if g.roles.insert(p.clone(), *r).is_some() {
                return Err(format!("--role names project {p} twice"));
            }
        }
        Ok(g)
    }
}

pub fn user(g: &Global, cmd: UserCmd) -> Result<(), String> {
    match cmd {
        UserCmd::List => show(g, call::users(), |v| print_users(&v)),
        UserCmd::Add { name, grants } => {
            let grants = grants.grants()?;
            let password = read_password(&name)?;
            let body = UserAddBody {
                name,
                password,
                grants,
            };
            change(g, call::user_add(&body))
        }
        UserCmd::Passwd { name } => {
            let password = read_password(&name)?;
            change(
                g,
                call::user_change(&name, &UserChange::Password { password }),
            )
        }
        UserCmd::Roles { name, grants } => {
            let grants = grants.grants()?;
            change(g, call::user_change(&name, &UserChange::Roles { grants }))
        }
        UserCmd::Disable { name } => change(g, call::user_change(&name, &UserChange::Disable)),
        UserCmd::Enable { name } => change(g, call::user_change(&name, &UserChange::Enable)),
        UserCmd::Hash { name } => {
            g.no_json("user hash")?;
            let name = name.unwrap_or_default();
            let password = read_password(if name.is_empty() {
                "the account"
            } else {
                &name
            })?;
            crate::password::check_new_password(&name, &password)?;
            println!("{}", crate::password::hash_password(&password)?);
            Ok(())
        }
    }
}

/// Make a change and say what was done (with `--json`, the daemon's answer). A refusal is the
/// daemon's message as it stands.
fn change(g: &Global, call: Call<UserOutcome>) -> Result<(), String> {
    let refused = |e: ClientError| match e {
        ClientError::Status { body, .. } => body,
        other => other.to_string(),
    };
    let client = g.client()?;
    if g.json {
        return print_json(&client.send(&call.json()).map_err(refused)?);
    }
    let o = client.send(&call).map_err(refused)?;
    println!("{}", o.done);
    if o.user.grants.is_empty() {
        eprintln!(
            "note: {} has no role: it cannot use the web page until given one (`fiona user roles {} --role PROJECT=ROLE` or `--admin`)",
            o.user.name, o.user.name
        );
    }
    Ok(())
}

/// A new password from stdin: on a terminal asked twice without echo, else one line (its
/// line end removed). Never echoed, never logged.
fn read_password(name: &str) -> Result<String, String> {
    if std::io::stdin().is_terminal() {
        let ask = |prompt: String| {
            rpassword::prompt_password(prompt).map_err(|e| format!("cannot read the password: {e}"))
        };
        let first = ask(format!("New password for {name}: "))?;
        let again = ask("The same password again: ".to_string())?;
        if first != again {
            return Err("the two passwords differ; nothing was changed".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    if n == 0 {
        return Err("no password on stdin: give it as one line (or run on a terminal)".into());
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_string())
}

fn print_users(v: &[UserView]) {
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("FROM", Align::Left),
        ("ROLES", Align::Left),
        ("STATE", Align::Left),
        ("CREATED", Align::Left),
        ("CHANGED", Align::Left),
    ]);
    let time = |ms: Option<i64>| ms.map(iso_ms).unwrap_or_else(|| "-".into());
    for u in v {
        t.row([
            u.name.clone(),
            u.source.clone(),
            u.grants.describe(),
            if u.disabled { "disabled" } else { "active" }.to_string(),
            time(u.created_ms),
            time(u.changed_ms),
        ]);
    }
    t.print();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_project_equals_role() {
        assert_eq!(
            parse_role("PROJ1=assigner").unwrap(),
            ("PROJ1".to_string(), Role::Assigner)
        );
        assert!(parse_role("PROJ1:assigner")
            .unwrap_err()
            .contains("PROJECT=ROLE"));
        assert!(parse_role("=viewer")
            .unwrap_err()
            .contains("project is missing"));
        assert!(parse_role("PROJ1=boss").unwrap_err().contains("not a role"));
        let twice = GrantArgs {
            admin: false,
            roles: vec![("P".into(), Role::Viewer), ("P".into(), Role::Manager)],
        };
        assert!(twice.grants().unwrap_err().contains("twice"));
    }
}
