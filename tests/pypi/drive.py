"""Drives ts3ab-lb with the real PyPI client `ts3audiobot-api==0.0.3.9`.

Usage: drive.py <host> <port> <uid:secret>
Prints one JSON object with what each client call returned; the Rust test checks it.
"""
import json
import sys

from ts3audiobot_api.ts3audiobot import TS3AudioBot


def main():
    host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    bot = TS3AudioBot(host, token, port=port, timeout=10)
    c = bot.get_command_executor()
    out = {}
    # The client wraps every call in bot/use/<id>/( and defaults to bot 0.
    out["bots_before"] = c.get_bots()
    out["template"] = c.connect_via_template("pybot")
    out["connected"] = c.connect_new("ts.example.com")
    new_id = out["connected"]["Id"]
    c.use(new_id)
    out["info"] = c.get_information()
    out["play"] = c.play("https://example.com/a b.mp3?x=1&y=(2)")
    out["volume_set"] = c.set_volume(30)
    out["song"] = c.get_song()
    out["bots_after"] = c.get_bots()
    out["disconnect"] = c.disconnect()
    c.use(0)
    out["bots_final"] = c.get_bots()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
