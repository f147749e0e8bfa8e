#!/usr/bin/env escript
%%! +P 4000000
%% Erlang reference figures for tests/bench/bench_supervisors.py.
%%
%%   escript tests/bench/erlang/supervisors_bench.erl [quick]
%%
%% Prints ONE line of JSON on stdout:
%%   restart_latency_us_p50, restart_latency_us_p99
%%       one_for_one supervisor with one gen_server worker; the worker is killed with
%%       exit(Pid, kill) and the sample is the time from just before the kill until the
%%       replacement's init/1 reports erlang:monotonic_time() (1,000 samples). OTP keeps every restart of the last period in a list that it filters on each restart,
%%       and 1,000 restarts fit in one period, so these include walking up to 1,000 entries
%%   restart_latency_short_history_us_p50, restart_latency_short_history_us_p99
%%       the same 1,000 samples from 100 fresh supervisors killing 10 workers each: the restart
%%       itself, with a short restart history (the usual case)
%%   restart_latency_logged_us_p50, restart_latency_logged_us_p99
%%       the same with OTP's crash report for each restart formatted and written (to
%%       /dev/null); the figures above run with logging off (logger level none)
%%   dynamic_start_100k_s
%%       simple_one_for_one supervisor, supervisor:start_child/2 of 100,000 gen_server workers
%%   dynamic_stop_100k_s
%%       the same supervisor stopped with exit(Sup, shutdown), until its 'DOWN': OTP shuts its
%%       dynamic children down in parallel (what Parley's dynamic supervisor must match)
%%   dynamic_terminate_each_100k_s
%%       100,000 sequential supervisor:terminate_child/2 calls on a second such supervisor
%%   bytes_per_child
%%       process_info(Sup, memory) growth per child with 100,000 children (bookkeeping only;
%%       the children's own memory is not counted), both readings after garbage_collect(Sup)
-module(supervisors_bench).
-mode(compile).
-export([main/1, init/1, handle_call/3, handle_cast/2, handle_info/2, start_worker/1]).

main(Args) ->
    Quick = lists:member("quick", Args),
    N = fun(_Full, Small) when Quick -> Small; (Full, _Small) -> Full end,
    process_flag(trap_exit, true),
    %% Nothing but the JSON line reaches stdout: the default handler goes, logging is off
    %% except while the logged restart latency is measured.
    ok = logger:remove_handler(default),
    ok = logger:set_primary_config(level, none),
    Samples = N(1000, 100),
    {P50, P99} = restart_latency(1, Samples),
    {ShortP50, ShortP99} = restart_latency(Samples div 10, 10),
    {LoggedP50, LoggedP99} = with_crash_reports(fun() -> restart_latency(1, Samples) end),
    Dynamic = dynamic(N(100000, 5000)),
    Results = [
        {restart_latency_us_p50, P50},
        {restart_latency_us_p99, P99},
        {restart_latency_short_history_us_p50, ShortP50},
        {restart_latency_short_history_us_p99, ShortP99},
        {restart_latency_logged_us_p50, LoggedP50},
        {restart_latency_logged_us_p99, LoggedP99}
        | Dynamic
    ],
    io:format("~s~n", [to_json([{quick, Quick}, {otp_release, otp()} | Results])]).

%% --- one module, three roles: supervisor, dynamic supervisor, worker -----------

init({one_for_one, Notify}) ->
    Flags = #{strategy => one_for_one, intensity => 1000000, period => 1},
    Child = #{id => worker, start => {?MODULE, start_worker, [Notify]}},
    {ok, {Flags, [Child]}};
init(simple_one_for_one) ->
    Flags = #{strategy => simple_one_for_one, intensity => 1000000, period => 1},
    Child = #{id => worker, start => {?MODULE, start_worker, [none]}},
    {ok, {Flags, [Child]}};
init({worker, none}) ->
    {ok, idle};
init({worker, Notify}) ->
    Notify ! {started, self(), erlang:monotonic_time()},
    {ok, idle}.

start_worker(Notify) -> gen_server:start_link(?MODULE, {worker, Notify}, []).

handle_call(_Request, _From, State) -> {reply, ok, State}.
handle_cast(_Request, State) -> {noreply, State}.
handle_info(_Info, State) -> {noreply, State}.

%% --- restart latency -------------------------------------------------------------

%% Start Supervisors one_for_one supervisors in turn and kill each one's worker Kills times;
%% return the 50th and 99th percentiles of all the samples, in microseconds.
restart_latency(Supervisors, Kills) ->
    Latencies = lists:append([restart_samples(Kills) || _ <- lists:seq(1, Supervisors)]),
    Us = [erlang:convert_time_unit(L, native, nanosecond) / 1000 || L <- Latencies],
    {percentile(Us, 50), percentile(Us, 99)}.

restart_samples(Kills) ->
    {ok, Sup} = supervisor:start_link(?MODULE, {one_for_one, self()}),
    First = receive {started, Pid, _} -> Pid end,
    Latencies = kill_loop(First, Kills, []),
    stop(Sup),
    Latencies.

kill_loop(_, 0, Acc) -> Acc;
kill_loop(Worker, K, Acc) ->
    Start = erlang:monotonic_time(),
    exit(Worker, kill),
    receive
        {started, Next, Running} -> kill_loop(Next, K - 1, [Running - Start | Acc])
    end.

%% Run Measure with OTP's default logging (level notice) into a plain file handler on /dev/null.
with_crash_reports(Measure) ->
    ok = logger:add_handler(bench_null, logger_std_h, #{config => #{file => "/dev/null"}}),
    ok = logger:set_primary_config(level, notice),
    try Measure()
    after
        ok = logger:set_primary_config(level, none),
        ok = logger:remove_handler(bench_null)
    end.

percentile(Samples, P) ->
    Sorted = lists:sort(Samples),
    Rank = max(1, ceil(length(Sorted) * P / 100)),
    lists:nth(Rank, Sorted).

%% --- dynamic children --------------------------------------------------------------

dynamic(Count) ->
    {ok, Sup} = supervisor:start_link(?MODULE, simple_one_for_one),
    erlang:garbage_collect(Sup),
    {memory, Empty} = process_info(Sup, memory),
    StartTime = erlang:monotonic_time(),
    start_children(Sup, Count),
    Started = seconds_since(StartTime),
    erlang:garbage_collect(Sup),
    {memory, Full} = process_info(Sup, memory),
    Count = proplists:get_value(active, supervisor:count_children(Sup)),
    StopTime = erlang:monotonic_time(),
    stop(Sup),
    Stopped = seconds_since(StopTime),

    {ok, Sup2} = supervisor:start_link(?MODULE, simple_one_for_one),
    Pids = start_children(Sup2, Count),
    EachTime = erlang:monotonic_time(),
    [ok = supervisor:terminate_child(Sup2, P) || P <- Pids],
    Each = seconds_since(EachTime),
    stop(Sup2),
    [{dynamic_start_100k_s, Started * 100000 / Count},
     {dynamic_stop_100k_s, Stopped * 100000 / Count},
     {dynamic_terminate_each_100k_s, Each * 100000 / Count},
     {bytes_per_child, (Full - Empty) / Count}].

start_children(Sup, Count) -> start_children(Sup, Count, []).

start_children(_, 0, Acc) -> Acc;
start_children(Sup, K, Acc) ->
    {ok, Pid} = supervisor:start_child(Sup, []),
    start_children(Sup, K - 1, [Pid | Acc]).

%% Stop a supervisor the way its parent would: exit(Sup, shutdown), then wait for it to go.
stop(Sup) ->
    unlink(Sup),
    Ref = monitor(process, Sup),
    exit(Sup, shutdown),
    receive {'DOWN', Ref, process, Sup, _} -> ok end,
    receive {'EXIT', Sup, _} -> ok after 0 -> ok end.

seconds_since(Start) ->
    erlang:convert_time_unit(erlang:monotonic_time() - Start, native, nanosecond) / 1.0e9.

%% --- output ------------------------------------------------------------------------

otp() -> list_to_binary(erlang:system_info(otp_release)).

to_json(Pairs) ->
    Fields = [["\"", atom_to_list(K), "\":", json_value(V)] || {K, V} <- Pairs],
    ["{", lists:join(",", Fields), "}"].

json_value(true) -> "true";
json_value(false) -> "false";
json_value(V) when is_integer(V) -> integer_to_list(V);
json_value(V) when is_float(V) -> float_to_list(V, [{decimals, 6}, compact]);
json_value(V) when is_binary(V) -> ["\"", V, "\""].
