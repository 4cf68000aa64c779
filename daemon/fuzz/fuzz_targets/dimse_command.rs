//! Fuzz target for the DIMSE command set codec (`fiona::dimse`).
//!
//! Properties (a violation panics):
//! * `Command::parse` never panics, whatever the bytes;
//! * when a command parses, the response the SCP would build from its fields with
//!   `encode_response` parses again, and carries those fields back.
#![no_main]

use fiona::dimse::{encode_response, Command, NO_DATA_SET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cmd) = Command::parse(data) else {
        return;
    };
    // As the SCP answers: response field = request field | 0x8000, the request's message id,
    // its SOP class and instance echoed back, any status (the priority is as good a u16 as any).
    let rsp_field = cmd.command_field | 0x8000;
    let status = cmd.priority;
    let encoded = encode_response(
        rsp_field,
        cmd.message_id,
        &cmd.affected_sop_class_uid,
        Some(&cmd.affected_sop_instance_uid),
        status,
    );
    assert!(encoded.len() % 2 == 0, "odd-length response ({} bytes)", encoded.len());
    let back = match Command::parse(&encoded) {
        Ok(b) => b,
        Err(e) => panic!(
            "response built from a parsed command does not parse: {e} \
             (request {} bytes, response {} bytes, class uid {} bytes, instance uid {} bytes)",
            data.len(),
            encoded.len(),
            cmd.affected_sop_class_uid.len(),
            cmd.affected_sop_instance_uid.len()
        ),
    };
    assert_eq!(back.command_field, rsp_field);
    assert!(!back.has_data_set());
    assert_eq!(back.data_set_type, NO_DATA_SET);
    assert_eq!(back.affected_sop_class_uid, cmd.affected_sop_class_uid);
    assert_eq!(back.affected_sop_instance_uid, cmd.affected_sop_instance_uid);
});
