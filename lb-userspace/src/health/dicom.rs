//! `check: dicom-echo`: a real DICOM association (PS3.8 section 9) offering the Verification
//! SOP Class with Implicit VR Little Endian, then a C-ECHO-RQ (PS3.7 section 9.3.5) in a
//! P-DATA-TF. Up only on A-ASSOCIATE-AC with the context accepted and a C-ECHO-RSP with status
//! 0x0000; then A-RELEASE. Rejections and aborts are reported with the peer's reason.
//!
//! The upper-layer protocol and the command encoding come from dicom-rs (dicom-ul,
//! dicom-object).

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::{
    association::{Error as AssociationError, client::ClientAssociationOptions},
    pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason},
};

use super::{Target, Verdict, with_causes};

const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";
const C_ECHO_RQ: u16 = 0x0030;
const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: no data set follows.
const NO_DATA_SET: u16 = 0x0101;
const MESSAGE_ID: u16 = 1;

pub async fn check(target: Target, called_ae: &str, calling_ae: &str) -> Verdict {
    let implicit_le = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut association = ClientAssociationOptions::new()
        .with_presentation_context(VERIFICATION_SOP_CLASS, vec![implicit_le.uid()])
        .calling_ae_title(calling_ae)
        .called_ae_title(called_ae)
        .establish_async((target.address, target.port))
        .await
        .map_err(association_failure)?;

    let Some(context) = association
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && pc.abstract_syntax == VERIFICATION_SOP_CLASS
        })
        .map(|pc| pc.id)
    else {
        let _ = association.abort().await;
        return Err("Verification SOP Class not accepted".into());
    };

    let command = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(VERIFICATION_SOP_CLASS),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [C_ECHO_RQ])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [MESSAGE_ID])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
    ]);
    let mut bytes = Vec::new();
    command
        .write_dataset_with_ts(&mut bytes, &implicit_le)
        .map_err(|e| format!("encoding C-ECHO-RQ: {e}"))?;
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            }],
        })
        .await
        .map_err(|e| format!("sending C-ECHO-RQ: {e}"))?;

    // The response command may span several PDVs; collect until the last fragment.
    let mut response = Vec::new();
    loop {
        match association.receive().await {
            Ok(Pdu::PData { data }) => {
                let mut last = false;
                for pdv in data {
                    if pdv.value_type == PDataValueType::Command {
                        response.extend_from_slice(&pdv.data);
                        last |= pdv.is_last;
                    }
                }
                if last {
                    break;
                }
            }
            Ok(Pdu::AbortRQ { source }) => {
                return Err(format!("association aborted by the peer: {source:?}"));
            }
            Ok(other) => {
                let _ = association.abort().await;
                return Err(format!(
                    "unexpected PDU instead of C-ECHO-RSP: {}",
                    other.short_description()
                ));
            }
            Err(e) => return Err(format!("receiving C-ECHO-RSP: {}", with_causes(&e))),
        }
    }
    let verdict = judge_response(&response, &implicit_le);
    // A-RELEASE either way; a peer that fumbles the release has still answered the echo.
    let _ = association.release().await;
    verdict
}

fn judge_response(bytes: &[u8], ts: &dicom_encoding::TransferSyntax) -> Verdict {
    let rsp = InMemDicomObject::read_dataset_with_ts(bytes, ts)
        .map_err(|e| format!("malformed C-ECHO-RSP: {e}"))?;
    let u16_of = |tag| -> Option<u16> { rsp.element(tag).ok()?.to_int::<u16>().ok() };
    if u16_of(tags::COMMAND_FIELD) != Some(C_ECHO_RSP) {
        return Err("response is not a C-ECHO-RSP".into());
    }
    if u16_of(tags::MESSAGE_ID_BEING_RESPONDED_TO) != Some(MESSAGE_ID) {
        return Err("C-ECHO-RSP answers another message".into());
    }
    match u16_of(tags::STATUS) {
        Some(0) => Ok("C-ECHO status 0x0000".into()),
        Some(status) => Err(format!("C-ECHO status 0x{status:04X}")),
        None => Err("C-ECHO-RSP without a status".into()),
    }
}

fn association_failure(e: AssociationError) -> String {
    match e {
        AssociationError::Rejected { association_rj, .. } => {
            format!("association rejected: {}", association_rj.source)
        }
        AssociationError::Aborted { .. } => "association aborted by the peer".into(),
        AssociationError::NoAcceptedPresentationContexts { .. } => {
            "Verification SOP Class not accepted".into()
        }
        other => format!("association failed: {}", with_causes(&other)),
    }
}
