"""The trading platform's side of External Settlement, played against any external system.

`platform` sends the platform's four requests and reads the envelope, `money` keeps amounts exact,
`ledger` tracks what confirmed answers imply about each wallet. On top of them:

- the simulator (`simulate`, with `simspec`, `simresult` and `plots`): adjustments at a fixed rate
  or closed loop over many wallets, the platform's cancel after every timeout or failure, and at
  the end every wallet compared with what its confirmed adjustments imply;
- the conformance kit (`kit`, with `kitreport`, `kitsession`, `probes` and `cases`): the cases of
  docs/settlement.md section 10 against one funded wallet, PASS/FAIL per case.
"""
