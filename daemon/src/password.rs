//! Passwords of local web accounts: Argon2id hashes in PHC string format, their check, and
//! the rules a new password must meet. A leaf module (it names no other), so both the
//! control API (`fiona user add|passwd`, which the daemon hashes) and the web page (login, the
//! setup link, the Users page; re-exported as `web::auth`) use the same code.
//!
//! A password is never logged, printed or stored; only its hash is kept (in the index for
//! local accounts, in `[[web.accounts]]` for provisioned ones).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password accepted for a local account.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted (Argon2 takes any length; this bounds the work per request).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Hash a password with Argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane; OWASP's
/// recommendation) and a random salt, in PHC string format.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random bytes: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Does `password` match the PHC hash (Argon2id only)?
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(h) if h.algorithm.as_str() == "argon2id" => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        _ => false,
    }
}

/// Is `password` acceptable as a new password for account `name`?
pub fn check_new_password(name: &str, password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "the password must have at most {MAX_PASSWORD_LEN} bytes"
        ));
    }
    if password.eq_ignore_ascii_case(name) {
        return Err("the password must not be the account name".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterz"));
        assert!(!verify_password("not a hash", "x"));
        // Another algorithm in PHC form is not accepted.
        let i = h.replacen("$argon2id$", "$argon2i$", 1);
        assert!(!verify_password(&i, "correct horse battery"));
        assert!(check_new_password("alice", "short").is_err());
        assert!(check_new_password("alicealice12", "ALICEALICE12").is_err());
        assert!(check_new_password("alice", "a good long passphrase").is_ok());
    }
}
