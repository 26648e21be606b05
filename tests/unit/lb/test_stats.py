"""Parsing of runtime API answers, from text captured on HAProxy 2.6.12."""

from __future__ import annotations

import pytest

from skylift.lb.errors import NoSuchServer, RuntimeAPIError
from skylift.lb.process import parse_show_proc
from skylift.lb.runtime import _check_answer
from skylift.lb.stats import ServerState, fold_status, parse_servers_state, parse_stat_csv

HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,"
    "rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,"
    "conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,"
    "srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,"
    "used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
    "agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,\n"
)
DOWN_ROW = (
    "be_web,web-1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,100,1,0,1,1,610,610,,1,4,1,,0,,2,0,,0,L4CON,,0,"
    "0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,3,0,"
    ",,,127.0.0.1:18081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,100,,,,-,0,0,0,\n"
)
UP_ROW = (
    "be_web,web-2,1,0,3,5,,42,0,0,,0,,0,0,0,0,UP 1/3,100,1,0,0,0,12,0,,1,4,2,,40,,2,7,,9,* L7OK,"
    "200,1,0,40,0,0,0,0,,,,40,0,0,,,,,0,OK,,0,1,2,3,,,,Layer7 check passed,,2,3,3,,,,"
    "127.0.0.1:18082,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,100,,,,-,0,0,0,\n"
)


def test_parse_stat_rows() -> None:
    rows = parse_stat_csv(HEADER + DOWN_ROW + UP_ROW + "\n")
    assert [r.name for r in rows] == ["web-1", "web-2"]
    down, up = rows
    assert down.state is ServerState.DOWN
    assert down.check_status == "L4CON"
    assert down.check_desc == "Layer4 connection problem"
    assert down.last_chk == "Connection refused"
    assert down.addr == "127.0.0.1:18081"
    assert (up.state, up.status, up.scur, up.qcur, up.rate, up.weight) == (
        ServerState.UP,
        "UP 1/3",
        3,
        1,
        7,
        100,
    )
    assert up.check_status == "L7OK"  # the "* " (check running) mark is removed
    assert up.req_tot == 40
    assert up.req_rate is None  # servers have no req_rate in 2.6


def test_aggregates_are_skipped() -> None:
    row = "be_web,BACKEND,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,100,1,0,,0,1,0,,1,4,0,,0,,1,0\n"
    assert parse_stat_csv(HEADER + row) == []


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("UP", ServerState.UP),
        ("UP 2/3", ServerState.UP),
        ("DOWN", ServerState.DOWN),
        ("DOWN 1/2", ServerState.DOWN),
        ("MAINT", ServerState.MAINT),
        ("MAINT (via be/x)", ServerState.MAINT),
        ("MAINT (resolution)", ServerState.MAINT),
        ("DRAIN", ServerState.DRAIN),
        ("DRAIN (agent)", ServerState.DRAIN),
        ("NOLB", ServerState.NOLB),
        ("no check", ServerState.UP),
    ],
)
def test_fold_status(raw: str, state: ServerState) -> None:
    assert fold_status(raw) is state


def test_parse_servers_state() -> None:
    text = (
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
        "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
        "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
        "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
        "srv_agent_port\n4 be_web 1 web-1 127.0.0.1 0 8 100 100 610 8 2 0 6 0 0 0 - 18081 - 0 0 "
        "- - 0\n\n"
    )
    (row,) = parse_servers_state(text)
    assert (row.backend, row.name, row.address, row.admin_state, row.weight) == (
        "be_web",
        "web-1",
        "127.0.0.1:18081",
        8,
        100,
    )
    assert parse_servers_state("") == []
    with pytest.raises(ValueError):
        parse_servers_state("2\n# x\n")


def test_parse_show_proc() -> None:
    text = (
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
        "4501            master          2 [failed: 1]   0d00h10m14s     2.6.12-1+deb12u4\n"
        "# workers\n"
        "16327           worker          1               0d00h00m02s     2.6.12-1+deb12u4\n"
        "# old workers\n"
        "1233            worker          3               0d00h00m43s     2.6.12-1+deb12u4\n"
        "# programs\n\n"
    )
    info = parse_show_proc(text)
    assert (info.master_pid, info.reloads, info.failed_reloads) == (4501, 2, 1)
    assert info.workers == ((16327, 1),)  # old workers are not current workers
    with pytest.raises(ValueError):
        parse_show_proc("")


def test_answers_become_typed_errors() -> None:
    assert _check_answer("del server b/s", "Server deleted.\n", ok=("Server deleted.",))
    with pytest.raises(NoSuchServer):
        _check_answer("enable server b/s", "No such server.\n\n")
    with pytest.raises(RuntimeAPIError) as info:
        _check_answer("add server b/s 1.2.3.4:5", "Already exists a server with the same name")
    assert "Already exists" in info.value.answer
