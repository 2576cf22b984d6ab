# The founding document's event listener (seed/000_830f51d22dd644a1.txt, section 4),
# as written: it dispatches on event['type'] and hands event['data'] to a processor.
# Only the process_* bodies are filled in (the document leaves them as `pass`): each
# prints what it handled, so `lambent logs event_listener` shows which branch ran.
# The document's `import boto3` and its create_function call are the registration
# step, not the handler: see register_with_boto3.py beside this file.


# 定义事件监听器
def event_listener(event, context):
    # 处理事件
    if event['type'] == 'user_action':
        # 处理用户操作事件
        user_action = event['data']
        # 执行相应的操作
        process_user_action(user_action)
    elif event['type'] == 'data_update':
        # 处理数据更新事件
        data_update = event['data']
        # 执行相应的操作
        process_data_update(data_update)
    elif event['type'] == 'timer_trigger':
        # 处理定时器触发事件
        timer_trigger = event['data']
        # 执行相应的操作
        process_timer_trigger(timer_trigger)


# 处理用户操作事件
def process_user_action(user_action):
    print("user_action handled:", user_action)


# 处理数据更新事件
def process_data_update(data_update):
    print("data_update handled:", data_update)


# 处理定时器触发事件
def process_timer_trigger(timer_trigger):
    print("timer_trigger handled:", timer_trigger)
