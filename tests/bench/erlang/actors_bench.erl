#!/usr/bin/env escript
%%! +P 4000000
%% Erlang reference figures for tests/bench/bench_actors.py.
%%
%%   escript tests/bench/erlang/actors_bench.erl [quick]
%%
%% Prints ONE line of JSON on stdout:
%%   cast_msgs_per_s        one process sends N messages to one receiver that counts them,
%%                          timed until the receiver has them all (N = 2,000,000)
%%   gen_server_cast_msgs_per_s
%%                          the same through gen_server:cast to a gen_server counting in
%%                          handle_cast (what a cast to a behaviour actor costs; N = 2,000,000)
%%   call_roundtrips_per_s  sequential gen_server:call round trips (N = 200,000)
%%   spawn_per_s            spawning N processes that wait in receive (N = 200,000)
%%   idle_actor_bytes       erlang:memory(total) growth per process, 100,000 alive in receive
%%   hibernated_actor_bytes the same with the processes in erlang:hibernate/3
%%   idle_actor_process_info_bytes, hibernated_actor_process_info_bytes
%%                          process_info(P, memory) of one such process (heap and stack only)
-module(actors_bench).
-mode(compile).
-export([main/1, init/1, handle_call/3, handle_cast/2, handle_info/2, idle/0, woken/0]).

main(Args) ->
    Quick = lists:member("quick", Args),
    N = fun(_Full, Small) when Quick -> Small; (Full, _Small) -> Full end,
    Results = [
        {cast_msgs_per_s, best(fun() -> cast(N(2000000, 20000)) end)},
        {gen_server_cast_msgs_per_s, best(fun() -> gen_server_cast(N(2000000, 20000)) end)},
        {call_roundtrips_per_s, best(fun() -> call(N(200000, 5000)) end)},
        {spawn_per_s, best(fun() -> spawn_rate(N(200000, 5000)) end)}
    ] ++ memory(idle, N(100000, 5000)) ++ memory(hibernated, N(100000, 5000)),
    io:format("~s~n", [to_json([{quick, Quick}, {otp_release, otp()} | Results])]).

%% Best of three runs, as the Python side reports.
best(Measure) -> lists:max([Measure() || _ <- [1, 2, 3]]).

rate(Count, Start) ->
    Elapsed = erlang:monotonic_time() - Start,
    Count * erlang:convert_time_unit(1, second, native) / Elapsed.

%% --- casts -----------------------------------------------------------------

cast(Count) ->
    Self = self(),
    Start = erlang:monotonic_time(),
    Receiver = spawn_link(fun() -> count(Count, Self) end),
    spawn_link(fun() -> send_all(Receiver, Count) end),
    receive {counted, Receiver} -> ok end,
    rate(Count, Start).

send_all(_, 0) -> ok;
send_all(To, K) -> To ! K, send_all(To, K - 1).

count(0, ReportTo) -> ReportTo ! {counted, self()};
count(K, ReportTo) -> receive _ -> count(K - 1, ReportTo) end.

%% --- the gen_server: echoes calls, counts casts -----------------------------

init(State) -> {ok, State}.

handle_call(Request, _From, State) -> {reply, Request, State}.

handle_cast(_Request, {1, ReportTo}) -> ReportTo ! {counted, self()}, {noreply, done};
handle_cast(_Request, {K, ReportTo}) -> {noreply, {K - 1, ReportTo}}.

handle_info(_Info, State) -> {noreply, State}.

gen_server_cast(Count) ->
    Start = erlang:monotonic_time(),
    {ok, Server} = gen_server:start(?MODULE, {Count, self()}, []),
    spawn_link(fun() -> cast_all(Server, Count) end),
    receive {counted, Server} -> ok end,
    Rate = rate(Count, Start),
    gen_server:stop(Server),
    Rate.

cast_all(_, 0) -> ok;
cast_all(Server, K) -> gen_server:cast(Server, K), cast_all(Server, K - 1).

%% --- calls -----------------------------------------------------------------

call(Count) ->
    {ok, Server} = gen_server:start(?MODULE, echo, []),
    Start = erlang:monotonic_time(),
    ok = call_loop(Server, Count),
    Rate = rate(Count, Start),
    gen_server:stop(Server),
    Rate.

call_loop(_, 0) -> ok;
call_loop(Server, K) -> K = gen_server:call(Server, K), call_loop(Server, K - 1).

%% --- spawn -----------------------------------------------------------------

idle() -> receive stop -> ok end.

spawn_rate(Count) ->
    Start = erlang:monotonic_time(),
    Pids = spawn_many(Count, fun idle/0, []),
    Rate = rate(Count, Start),
    stop_all(Pids),
    Rate.

spawn_many(0, _, Acc) -> Acc;
spawn_many(K, Fun, Acc) -> spawn_many(K - 1, Fun, [spawn(Fun) | Acc]).

%% Kill the processes and wait until they are gone, so the next measure starts clean.
stop_all(Pids) ->
    Refs = [monitor(process, P) || P <- Pids],
    [exit(P, kill) || P <- Pids],
    [receive {'DOWN', R, process, _, _} -> ok end || R <- Refs],
    ok.

%% --- memory ----------------------------------------------------------------

woken() -> idle().

memory(Kind, Count) ->
    Body = case Kind of
        idle -> fun idle/0;
        hibernated -> fun() -> erlang:hibernate(?MODULE, woken, []) end
    end,
    settle(),
    Before = erlang:memory(total),
    Pids = spawn_many(Count, Body, []),
    wait_until_waiting(Pids),
    settle(),
    After = erlang:memory(total),
    {memory, OneProcess} = process_info(hd(Pids), memory),
    stop_all(Pids),
    [{list_to_atom(atom_to_list(Kind) ++ "_actor_bytes"), (After - Before) / Count},
     {list_to_atom(atom_to_list(Kind) ++ "_actor_process_info_bytes"), OneProcess}].

%% Every process has reached its receive (or hibernated) before memory is read.
wait_until_waiting(Pids) ->
    Busy = [P || P <- Pids, process_info(P, status) =/= {status, waiting}],
    case Busy of
        [] -> ok;
        _ -> timer:sleep(10), wait_until_waiting(Busy)
    end.

settle() ->
    [erlang:garbage_collect(P) || P <- processes()],
    timer:sleep(50).

%% --- output ----------------------------------------------------------------

otp() -> list_to_binary(erlang:system_info(otp_release)).

to_json(Pairs) ->
    Fields = [["\"", atom_to_list(K), "\":", json_value(V)] || {K, V} <- Pairs],
    ["{", lists:join(",", Fields), "}"].

json_value(true) -> "true";
json_value(false) -> "false";
json_value(V) when is_integer(V) -> integer_to_list(V);
json_value(V) when is_float(V) -> float_to_list(V, [{decimals, 3}, compact]);
json_value(V) when is_binary(V) -> ["\"", V, "\""].
