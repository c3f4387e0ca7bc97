"""Delivery status notifications (RFC 3464 multipart/report; message/delivery-status).

``build_dsn`` makes the report for failed (or delayed, or with NOTIFY=SUCCESS delivered)
recipients of one message.  Callers never build one for a message with a null sender (never a
bounce of a bounce) and honour NOTIFY; ``recipients_to_report`` encodes those rules.
"""

from __future__ import annotations

import base64
import time
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import SMTP, SMTPUTF8
from email.utils import formatdate, make_msgid

from mail.spool import Envelope, Recipient


def recipients_to_report(env: Envelope, action: str) -> list[Recipient]:
    """Recipients whose NOTIFY asks for ``action`` ("failed", "delayed", "delivered")."""
    if not env.mail_from or env.is_bounce:
        return []
    wanted = {"failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS"}[action]
    out = []
    for r in env.recipients:
        notify = [n.upper() for n in r.notify]
        if "NEVER" in notify:
            continue
        if notify and wanted not in notify:
            continue
        if not notify and action == "delivered":  # default NOTIFY is FAILURE (and DELAY at our option)
            continue
        out.append(r)
    return out


def status_of(error: str, action: str) -> str:
    """An enhanced status code for the report, taken from the remote reply when it has one."""
    parts = error.split()
    for p in parts[:3]:
        if p.count(".") == 2 and p.replace(".", "").isdigit() and p[0] in "245":
            return p
    return {"failed": "5.0.0", "delayed": "4.0.0", "delivered": "2.0.0"}[action]


def build_dsn(env: Envelope, original: bytes, recipients: list[Recipient], action: str, reporting_mta: str,
              postmaster: str) -> bytes:
    msg = EmailMessage(policy=SMTPUTF8 if env.smtputf8 else SMTP)
    subject = {"failed": "Thư không gửi được / Undelivered Mail Returned to Sender",
               "delayed": "Thư đang tạm hoãn / Delayed Mail (still being retried)",
               "delivered": "Thư đã được gửi / Successful Mail Delivery Report"}[action]
    msg["From"] = f"Mail Delivery System <{postmaster}>"
    msg["To"] = env.mail_from
    msg["Subject"] = subject
    msg["Date"] = formatdate(time.time())
    msg["Message-ID"] = make_msgid(domain=reporting_mta)
    msg["Auto-Submitted"] = "auto-replied"
    lines = {
        "failed": "Thư của bạn không gửi được tới các người nhận dưới đây.\nYour message could not be delivered to:",
        "delayed": "Thư của bạn chưa gửi được và hệ thống vẫn đang thử lại.\nYour message has not been delivered yet; "
                   "we keep trying until it expires:",
        "delivered": "Thư của bạn đã được gửi tới:\nYour message was delivered to:",
    }[action]
    human = lines + "\n\n" + "\n".join(f"  <{r.address}>: {r.last_error or action}" for r in recipients) + "\n"
    msg.set_content(human, charset="utf-8")
    msg.make_mixed()
    msg.replace_header("Content-Type", "multipart/report; report-type=delivery-status")
    msg.set_boundary(f"=_lienthong_{env.id}")

    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    if env.envid:
        per_message["Original-Envelope-Id"] = env.envid
    per_message["Arrival-Date"] = formatdate(env.received_at)
    blocks = [per_message]
    for r in recipients:
        block = Message()
        if r.orcpt:
            block["Original-Recipient"] = r.orcpt
        block["Final-Recipient"] = f"{'rfc822' if r.address.isascii() else 'utf-8'}; {r.address}"
        block["Action"] = action
        block["Status"] = status_of(r.last_error, action)
        if r.remote_mta:
            block["Remote-MTA"] = f"dns; {r.remote_mta}"
        if r.last_error:
            block["Diagnostic-Code"] = f"smtp; {' '.join(r.last_error.split())}"
        blocks.append(block)
    status = Message()
    status["Content-Type"] = "message/global-delivery-status" if env.smtputf8 else "message/delivery-status"
    status.set_payload(blocks)  # type: ignore[arg-type]  # (typeshed: list is invariant; any Message list works)
    msg.attach(status)  # type: ignore[arg-type]  # (a compat32 Message part, on purpose: its exact bytes)

    headers_only = env.ret == "HDRS" or action != "failed"
    body = original.split(b"\r\n\r\n", 1)[0] + b"\r\n" if headers_only else original
    returned: Message
    if original.isascii():
        returned = EmailMessage()
        if headers_only:
            returned.set_type("text/rfc822-headers")
            returned.set_payload(body.decode("ascii"))
        else:
            returned.set_type("message/rfc822")
            returned.set_payload([BytesParser(policy=SMTP).parsebytes(original)])
        del returned["MIME-Version"]
    else:
        # Raw UTF-8 (SMTPUTF8 mail): RFC 6533's message/global types, which may be base64-encoded.
        returned = Message()
        returned["Content-Type"] = "message/global-headers" if headers_only else "message/global"
        returned["Content-Transfer-Encoding"] = "base64"
        returned.set_payload(base64.encodebytes(body).decode("ascii"))
    msg.attach(returned)  # type: ignore[arg-type]  # (EmailMessage or a compat32 Message, as above)
    return msg.as_bytes()
