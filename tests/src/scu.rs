//! A raw DICOM SCU over dicom-ul for what DCMTK will not send: malformed data sets, lying
//! lengths, data sets that contradict their command. Command sets are encoded here by hand
//! (Implicit VR Little Endian, PS3.7 E.1), independent of the daemon's own codec.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};

pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

fn elem(out: &mut Vec<u8>, e: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn uid(u: &str) -> Vec<u8> {
    let mut v = u.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// A C-STORE-RQ command set.
pub fn c_store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    let mut body = Vec::new();
    elem(&mut body, 0x0002, &uid(sop_class));
    elem(&mut body, 0x0100, &1u16.to_le_bytes());
    elem(&mut body, 0x0110, &message_id.to_le_bytes());
    elem(&mut body, 0x0700, &0u16.to_le_bytes());
    elem(&mut body, 0x0800, &0u16.to_le_bytes());
    elem(&mut body, 0x1000, &uid(sop_instance));
    let mut out = Vec::new();
    elem(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A C-ECHO-RQ command set.
pub fn c_echo_rq(message_id: u16) -> Vec<u8> {
    let mut body = Vec::new();
    elem(&mut body, 0x0002, &uid("1.2.840.10008.1.1"));
    elem(&mut body, 0x0100, &0x30u16.to_le_bytes());
    elem(&mut body, 0x0110, &message_id.to_le_bytes());
    elem(&mut body, 0x0800, &0x0101u16.to_le_bytes());
    let mut out = Vec::new();
    elem(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Status (0000,0900) of a response command set.
pub fn status_of(cmd: &[u8]) -> Option<u16> {
    let mut pos = 0;
    while pos + 8 <= cmd.len() {
        let e = u16::from_le_bytes([cmd[pos + 2], cmd[pos + 3]]);
        let len =
            u32::from_le_bytes([cmd[pos + 4], cmd[pos + 5], cmd[pos + 6], cmd[pos + 7]]) as usize;
        let v = cmd.get(pos + 8..pos + 8 + len)?;
        if e == 0x0900 && len == 2 {
            return Some(u16::from_le_bytes([v[0], v[1]]));
        }
        pos += 8 + len;
    }
    None
}

/// An Explicit VR Little Endian element (short or long header by VR).
pub fn ele(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    let long = matches!(
        vr,
        b"OB"
            | b"OW"
            | b"SQ"
            | b"UN"
            | b"UT"
            | b"UC"
            | b"UR"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"SV"
            | b"UV"
    );
    if long {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
    if value.len() % 2 == 1 {
        out.push(if vr == b"UI" { 0 } else { b' ' });
        // fix the length for the pad byte
        let n = out.len();
        let len_pos = if long {
            n - value.len() - 1 - 4
        } else {
            n - value.len() - 1 - 2
        };
        if long {
            out[len_pos..len_pos + 4].copy_from_slice(&((value.len() + 1) as u32).to_le_bytes());
        } else {
            out[len_pos..len_pos + 2].copy_from_slice(&((value.len() + 1) as u16).to_le_bytes());
        }
    }
    out
}

/// Write `ds` (encoded in `ts`) as a Part-10 file: preamble, `DICM`, the file meta group.
pub fn write_part10(path: &std::path::Path, sop_class: &str, sop: &str, ts: &str, ds: &[u8]) {
    let mut meta = Vec::new();
    meta.extend(ele(0x0002, 0x0001, b"OB", &[0, 1]));
    meta.extend(ele(0x0002, 0x0002, b"UI", sop_class.as_bytes()));
    meta.extend(ele(0x0002, 0x0003, b"UI", sop.as_bytes()));
    meta.extend(ele(0x0002, 0x0010, b"UI", ts.as_bytes()));
    meta.extend(ele(0x0002, 0x0012, b"UI", b"2.25.79001.999"));
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend(ele(
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    ));
    out.extend(meta);
    out.extend_from_slice(ds);
    std::fs::write(path, out).expect("write Part-10 file");
}

/// A minimal valid CT data set (Explicit VR LE) with the given UIDs and a small pixel block.
pub fn minimal_ct(study: &str, series: &str, sop: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(ele(0x0008, 0x0016, b"UI", CT_IMAGE_STORAGE.as_bytes()));
    d.extend(ele(0x0008, 0x0018, b"UI", sop.as_bytes()));
    d.extend(ele(0x0008, 0x0060, b"CS", b"CT"));
    d.extend(ele(0x0010, 0x0010, b"PN", b"Testperson^Raw"));
    d.extend(ele(0x0010, 0x0020, b"LO", b"FIONATEST-RAW"));
    d.extend(ele(0x0020, 0x000D, b"UI", study.as_bytes()));
    d.extend(ele(0x0020, 0x000E, b"UI", series.as_bytes()));
    d.extend(ele(0x0028, 0x0010, b"US", &4u16.to_le_bytes()));
    d.extend(ele(0x0028, 0x0011, b"US", &4u16.to_le_bytes()));
    d.extend(ele(0x7FE0, 0x0010, b"OW", &[7u8; 32]));
    d
}

/// An association with one presentation context.
pub struct RawScu {
    assoc: ClientAssociation<TcpStream>,
    pc_id: u8,
    next_id: u16,
}

impl RawScu {
    pub fn connect(
        addr: SocketAddr,
        calling: &str,
        called: &str,
        sop_class: &str,
        ts: &str,
    ) -> Result<RawScu, String> {
        let assoc = ClientAssociationOptions::new()
            .calling_ae_title(calling)
            .called_ae_title(called)
            .with_presentation_context(sop_class, vec![ts])
            .read_timeout(Duration::from_secs(30))
            .establish(addr)
            .map_err(|e| e.to_string())?;
        let pc = assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .ok_or("no presentation context accepted")?;
        let pc_id = pc.id;
        Ok(RawScu {
            assoc,
            pc_id,
            next_id: 1,
        })
    }

    fn send_pdv(&mut self, ty: PDataValueType, data: Vec<u8>, last: bool) -> Result<(), String> {
        self.assoc
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: self.pc_id,
                    value_type: ty,
                    is_last: last,
                    data,
                }],
            })
            .map_err(|e| e.to_string())
    }

    fn read_status(&mut self) -> Result<u16, String> {
        match self.assoc.receive().map_err(|e| e.to_string())? {
            Pdu::PData { data } => {
                let cmd: Vec<u8> = data.into_iter().flat_map(|p| p.data).collect();
                status_of(&cmd).ok_or_else(|| "response without status".to_string())
            }
            other => Err(format!("unexpected PDU {other:?}")),
        }
    }

    /// Send a C-STORE with this command and these data set bytes (fragmented), return the
    /// response status.
    pub fn store_raw(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        dataset: &[u8],
    ) -> Result<u16, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_pdv(
            PDataValueType::Command,
            c_store_rq(id, sop_class, sop_instance),
            true,
        )?;
        let chunks: Vec<&[u8]> = dataset.chunks(8192).collect();
        if chunks.is_empty() {
            self.send_pdv(PDataValueType::Data, Vec::new(), true)?;
        }
        for (i, c) in chunks.iter().enumerate() {
            self.send_pdv(PDataValueType::Data, c.to_vec(), i + 1 == chunks.len())?;
        }
        self.read_status()
    }

    pub fn echo(&mut self) -> Result<u16, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_pdv(PDataValueType::Command, c_echo_rq(id), true)?;
        self.read_status()
    }

    pub fn release(self) -> Result<(), String> {
        self.assoc.release().map_err(|e| e.to_string())
    }
}
