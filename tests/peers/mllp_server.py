"""An HL7 MLLP server for the tests, built on python3-hl7's own MLLP server
(hl7.mllp.start_hl7_server). It answers every message with the ACK python-hl7 makes for it.

usage: mllp_server.py PORT [aa|ae|wrong-id|silent]
  aa        ACK with MSA-1 AA (the default)
  ae        ACK with MSA-1 AE (application error)
  wrong-id  an AA ACK for another control ID
  silent    read messages, never answer
"""
import asyncio
import sys

import hl7
from hl7.mllp import start_hl7_server


async def main(port, mode):
    async def serve(reader, writer):
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                if mode == "silent":
                    continue
                ack = message.create_ack(ack_code="AE" if mode == "ae" else "AA")
                if mode == "wrong-id":
                    ack = hl7.parse(str(ack).replace(str(message["MSH.F10"]), "SOMEONE-ELSE"))
                writer.writemessage(ack)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await start_hl7_server(serve, "0.0.0.0", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "aa"))
