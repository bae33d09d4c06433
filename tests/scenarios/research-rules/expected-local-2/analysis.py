print('from ws1')
